"""What Unsloth, bitsandbytes and TRL would do to a run on a GPU (../shared/GPU_AUDIT.md), checked on the CPU: at the
level of the tool's own arguments and order of calls, with stand-ins for what needs a GPU, and the real libraries
wherever they import without one."""

import json
import logging
import sys
import types
from dataclasses import replace

import pytest
import torch
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer

from config import build_config
from grpo_tool.backend import Machine, backend_problem, precision, prepare, quiet_unsloth, unused_settings
from grpo_tool.errors import UserError
from grpo_tool.settings import GRPOConfig, explicit_settings
from grpo_tool.trl_options import SAME_ON_EVERY_BACKEND
from grpo_tool.trl_setup import effective_arguments, keep_trainable_weights_in_fp32, trl_arguments, trl_defaults

CPU = Machine("transformers", "test", cuda=False, weights_dtype="float32", bf16=False)


class UnslothLikeGRPOConfig(trl.GRPOConfig):
    """What Unsloth 2026.10.7's generated GRPOConfig does to the arguments it is given (unsloth/models/rl.py): its
    own defaults for what is not passed, and its rewrites of an explicit loss_type."""

    DEFAULTS = {"optim": "adamw_8bit", "weight_decay": 0.001, "warmup_steps": 0.1, "eval_accumulation_steps": 2,
                "torch_empty_cache_steps": 250, "vllm_importance_sampling_correction": False,
                "logging_nan_inf_filter": False, "seed": 3407, "learning_rate": 5e-5}

    def __init__(self, *, loss_type=None, mask_truncated_completions=None, epsilon_high=None, scale_rewards="group",
                 **kwargs):
        type(self).given = {**kwargs, "mask_truncated_completions": mask_truncated_completions,
                            "epsilon_high": epsilon_high}
        explicit = loss_type is not None
        loss_type = loss_type or "dapo"
        if loss_type == "dr_grpo" and scale_rewards in (True, "group"):
            scale_rewards = False  # "The Dr GRPO paper recommends setting scale_rewards to False! Will override."
        elif loss_type == "dapo" and explicit:
            mask_truncated_completions = True if mask_truncated_completions is None else mask_truncated_completions
            epsilon_high = 0.28 if epsilon_high is None else epsilon_high
        super().__init__(**{**self.DEFAULTS, **kwargs}, loss_type=loss_type, epsilon_high=epsilon_high,
                         mask_truncated_completions=bool(mask_truncated_completions), scale_rewards=scale_rewards)


OPTIMISATION = (*SAME_ON_EVERY_BACKEND, "epsilon_high", "loss_type", "learning_rate", "seed", "beta", "fp16", "bf16")


@pytest.mark.parametrize("loss_type", ["dapo", "dr_grpo", "grpo"])
def test_unsloths_config_optimises_what_trls_does(monkeypatch, loss_type):
    config = GRPOConfig(model_name="tiny", gradient_checkpointing=False, loss_type=loss_type)
    plain = effective_arguments(trl_arguments(config, CPU, model=None, evaluate=True))
    monkeypatch.setattr(trl, "GRPOConfig", UnslothLikeGRPOConfig)
    patched = effective_arguments(trl_arguments(config, CPU, model=None, evaluate=True))
    assert {key: patched[key] for key in OPTIMISATION} == {key: plain[key] for key in OPTIMISATION}
    # Given explicitly, not only put back afterwards: whatever Unsloth's __init__ derives from them sees TRL's values.
    given = UnslothLikeGRPOConfig.given
    assert (given["optim"], given["weight_decay"], given["mask_truncated_completions"], given["epsilon_high"]) == (
        "adamw_torch_fused", 0.0, False, 0.2)
    assert plain["optim"] == "adamw_torch_fused" and plain["mask_truncated_completions"] is False
    assert plain["epsilon_high"] == 0.2 and plain["scale_rewards"] == "group"


def test_what_unsloth_would_change_is_trls_own_default_and_trl_options_still_win(monkeypatch):
    defaults = trl_defaults()
    assert {name: defaults[name] for name in SAME_ON_EVERY_BACKEND} == SAME_ON_EVERY_BACKEND
    monkeypatch.setattr(trl, "GRPOConfig", UnslothLikeGRPOConfig)
    config = GRPOConfig(model_name="tiny", gradient_checkpointing=False, loss_type="dr_grpo",
                        trl_options={"optim": "adamw_8bit", "scale_rewards": "batch", "epsilon": 0.3})
    args = trl_arguments(config, CPU, model=None, evaluate=True)
    assert (args.optim, args.scale_rewards, args.epsilon_high) == ("adamw_8bit", "batch", 0.3)


def test_precision():
    lora, full = GRPOConfig(), GRPOConfig(use_lora=False)
    assert precision(lora, cuda=True, bf16_supported=True) == ("bfloat16", True)
    assert precision(lora, cuda=True, bf16_supported=False) == ("float16", False)
    # Full fine-tuning on a GPU keeps float32 master weights: bf16 ones would round most Adam steps away.
    assert precision(full, cuda=True, bf16_supported=True) == ("float32", True)
    gpu_without_bf16 = Machine("transformers", "t", cuda=True, weights_dtype="float16", bf16=False)
    assert gpu_without_bf16.fp16 and gpu_without_bf16.compute_dtype == "float16"  # fp16 autocast, not none
    assert not CPU.fp16 and CPU.compute_dtype == "float32"
    args = trl_arguments(GRPOConfig(model_name="tiny", gradient_checkpointing=False), CPU, None, False)
    assert (args.fp16, args.bf16) == (False, False)


@pytest.mark.parametrize("overrides, backend, fragment", [
    ({"use_vllm": True, "use_lora": False, "load_in_4bit": False}, "unsloth", "Unsloth's vLLM engine serves LoRA"),
    ({"use_vllm": True}, "transformers", "each round trip re-quantises the base"),
    ({"metric_for_best_model": "eval_entropy"}, "unsloth", "Unsloth's GRPO loss does not log entropy"),
])
def test_combinations_a_backend_cannot_run_are_refused(overrides, backend, fragment):
    assert fragment in backend_problem(GRPOConfig(**overrides), backend, cuda=True)
    assert backend_problem(GRPOConfig(**overrides), "transformers" if backend == "unsloth" else "unsloth",
                           cuda=True) is None


def test_full_fine_tuning_never_loads_4_bit_weights():
    assert not build_config(overrides={"model_name": "tiny", "use_lora": False}).four_bit
    assert not build_config(overrides={"model_name": "qwen2.5-7b", "use_lora": False}).four_bit
    assert build_config(overrides={"model_name": "qwen2.5-7b"}).four_bit
    with pytest.raises(UserError, match="4-bit weights cannot be trained"):
        build_config(overrides={"model_name": "qwen2.5-7b", "use_lora": False, "load_in_4bit": True})


def said(overrides: dict, cuda: bool = False, processes: int = 1, cores: int = 2, mode: str | None = None) -> str:
    config = build_config(mode=mode, overrides={"model_name": "tiny", **overrides})
    return "\n".join(unused_settings(config, explicit_settings(config), cuda, processes, cores))


def test_a_setting_this_machine_does_not_use_is_said_once_in_words():
    assert "weights load in float32" in said({"load_in_4bit": True, "use_lora": True})
    assert "emulates bfloat16" in said({"bf16": True})
    assert "vllm_gpu_memory_utilization, vllm_mode: unused, since use_vllm is off" in said(
        {"vllm_mode": "server", "vllm_gpu_memory_utilization": 0.5})
    assert "merged is written in float32" in said({"save_merged": True, "use_lora": True})
    assert "already holds the whole merged weights" in said({"save_merged": True, "use_lora": False})
    assert "8 processes were launched on this machine's 2 CPU cores" in said({}, processes=8)
    assert "max_tool_calls, tool_timeout: unused, since the run has no tools" in said({"max_tool_calls": 3,
                                                                                      "tool_timeout": 5.0})
    assert said({"max_tool_calls": 3, "tools": ["calculator"]}) == ""
    # What the machine uses as asked, or what the user did not ask for (a default, a preset, a mode), says nothing.
    assert said({}) == said({}, mode="quick_test") == said({"model_name": "qwen2.5-7b"}) == ""
    assert said({"load_in_4bit": True, "use_lora": True, "bf16": True, "save_merged": True}, cuda=True,
                processes=8) == ""
    assert said({}, processes=2) == ""
    # A config built in Python: what differs from the defaults is what its author chose.
    assert explicit_settings(GRPOConfig(bf16=True, vllm_mode="server")) == {"bf16", "vllm_mode"}


def test_the_run_is_told_and_its_machine_record_says_what_was_used(caplog):
    caplog.set_level(logging.INFO)
    machine = prepare(build_config(overrides={"model_name": "tiny", "bf16": True, "load_in_4bit": True,
                                                "use_lora": True}))
    assert len(machine.notices) == 2 and all(f"settings: {line}" in caplog.text for line in machine.notices)
    assert machine.used == {"weights_dtype": "float32", "autocast": "bfloat16", "merged_dtype": "float32",
                            "notices": list(machine.notices)}


def test_unsloth_writes_nothing_into_the_working_dir_and_fetches_no_statistics(monkeypatch):
    import os

    from grpo_tool.tiny_model import cache_root

    monkeypatch.delenv("UNSLOTH_DISABLE_STATISTICS", raising=False)
    monkeypatch.delenv("UNSLOTH_COMPILE_LOCATION", raising=False)
    quiet_unsloth()
    assert os.environ["UNSLOTH_DISABLE_STATISTICS"] == "1"
    assert os.environ["UNSLOTH_COMPILE_LOCATION"] == str(cache_root() / "unsloth_compiled_cache")
    monkeypatch.setenv("UNSLOTH_COMPILE_LOCATION", "/mine")  # a user's own setting wins
    quiet_unsloth()
    assert os.environ["UNSLOTH_COMPILE_LOCATION"] == "/mine"


@pytest.fixture(scope="module")
def tiny(tiny_model_cache):
    from grpo_tool.tiny_model import ensure_tiny_model

    return str(ensure_tiny_model())


def test_the_reward_model_loads_after_the_policy(monkeypatch, tiny, tmp_path):
    from grpo_tool import models
    from grpo_trainer import GRPOTrainer

    order = []
    monkeypatch.setattr(models, "load_policy", lambda *a, **k: order.append("policy") or (None, None, "p"))
    monkeypatch.setattr(models, "load_reward_model", lambda *a, **k: order.append("reward model") or
                        types.SimpleNamespace(name="reward_model", weight=1.0))
    GRPOTrainer(GRPOConfig(model_name="tiny", use_lora=False, reward_model="tiny",
                           output_dir=str(tmp_path))).load_model()
    assert order == ["policy", "reward model"]


@pytest.fixture
def fake_unsloth(monkeypatch, tiny):
    """A stand-in `unsloth` whose loader records what it is given and returns the tiny model."""
    seen = {}

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**options):
            seen["from_pretrained"] = options
            if "raise" in seen:
                raise seen["raise"]
            return AutoModelForCausalLM.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny)

        @staticmethod
        def get_peft_model(model, **options):
            seen["get_peft_model"] = options
            return model

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    return seen


def test_unsloth_is_given_the_runs_precision_vllm_mode_and_the_models_own_layers(fake_unsloth, tiny):
    from grpo_tool.models import load_with_unsloth

    gpu = Machine("unsloth", "t", cuda=True, weights_dtype="bfloat16", bf16=True)
    load_with_unsloth(GRPOConfig(use_vllm=True, vllm_mode="server"), gpu, tiny, fresh=True)
    given = fake_unsloth["from_pretrained"]
    assert given["dtype"] is torch.bfloat16 and given["load_in_4bit"] and given["fast_inference"] is False
    assert fake_unsloth["get_peft_model"]["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj",
                                                                "q_proj", "up_proj", "v_proj"]
    load_with_unsloth(GRPOConfig(use_vllm=True), replace(gpu, weights_dtype="float16", bf16=False), tiny, fresh=True)
    loaded = fake_unsloth["from_pretrained"]
    assert loaded["dtype"] is torch.float16 and loaded["fast_inference"]
    load_with_unsloth(GRPOConfig(use_lora=False), replace(gpu, weights_dtype="float32"), tiny, fresh=True)
    assert fake_unsloth["from_pretrained"]["full_finetuning"] and not fake_unsloth["from_pretrained"]["load_in_4bit"]
    assert fake_unsloth["from_pretrained"]["dtype"] is torch.float32


@pytest.mark.parametrize("error", [RuntimeError("Unsloth: unsupported model"), NotImplementedError("no vLLM here"),
                                   TimeoutError("stats"), ValueError("bad config")])
def test_unsloth_load_errors_are_one_line(fake_unsloth, tiny, error):
    from grpo_tool.models import load_with_unsloth

    fake_unsloth["raise"] = error
    gpu = Machine("unsloth", "t", cuda=True, weights_dtype="bfloat16", bf16=True)
    with pytest.raises(UserError, match=f"cannot be loaded \\({error}\\)"):
        load_with_unsloth(GRPOConfig(), gpu, tiny, fresh=True)


def lora_model(tiny):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(AutoModelForCausalLM.from_pretrained(tiny),
                          LoraConfig(r=4, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM"))


def test_lora_weights_stay_float32_after_trls_cast(tiny):
    model = lora_model(tiny)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.to(torch.bfloat16)  # what TRL does to a quantised model's adapter
    frozen = {name: p.dtype for name, p in model.named_parameters() if not p.requires_grad}
    assert keep_trainable_weights_in_fp32(model) > 0
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert {name: p.dtype for name, p in model.named_parameters() if not p.requires_grad} == frozen


def test_a_4_bit_weight_counts_its_true_shape():
    from grpo_tool.models import model_parameters

    model = torch.nn.Linear(8, 4, bias=False)
    packed = torch.nn.Parameter(torch.zeros(16, 1, dtype=torch.uint8), requires_grad=False)  # 32 values, 2 a byte
    packed.quant_state = types.SimpleNamespace(shape=torch.Size([4, 8]))
    model.weight = packed
    assert model_parameters(model) == 32


def test_a_4_bit_base_is_dequantised_before_the_merge_and_never_requantised(monkeypatch, tiny, tmp_path):
    """transformers + peft on a pre-quantised base: the adapter goes into the dequantised weights it was trained on."""
    from grpo_tool import models

    adapter_dir = tmp_path / "final_model"
    lora_model(tiny).save_pretrained(adapter_dir)
    calls = []

    def load_quantised(config, machine, source, quantize=None):
        base = AutoModelForCausalLM.from_pretrained(tiny)
        calls.append(("load", source, quantize, machine.weights_dtype))
        base.hf_quantizer = object()

        def dequantize(dtype=None):
            calls.append(("dequantize", dtype))
            return AutoModelForCausalLM.from_pretrained(tiny)

        base.dequantize = dequantize
        return base

    monkeypatch.setattr(models, "load_causal_lm", load_quantised)
    gpu = Machine("unsloth", "t", cuda=True, weights_dtype="bfloat16", bf16=True)
    target = models.save_merged(GRPOConfig(), gpu, AutoTokenizer.from_pretrained(tiny), adapter_dir,
                                adapter_dir / "merged")
    assert calls == [("load", tiny, True, "bfloat16"), ("dequantize", torch.bfloat16)]
    saved = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in saved and not (adapter_dir / ".merged.partial").exists()


def test_a_failed_merged_export_keeps_the_trained_model(monkeypatch, tmp_path, caplog):
    from grpo_tool import models
    from grpo_trainer import GRPOTrainer

    config = GRPOConfig(model_name="tiny", use_lora=True, save_merged=True, max_steps=1, group_size=2,
                        per_device_train_batch_size=2, per_device_eval_batch_size=2, gradient_accumulation_steps=1,
                        max_completion_length=4, max_eval_samples=2, max_samples=4, output_dir=str(tmp_path / "o"),
                        enable_generation_logging=False, dataset_name="sample")
    trainer = GRPOTrainer(config)
    trainer.train()
    monkeypatch.setattr(models, "save_merged", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("could not be read locally or on Hugging Face")))
    with caplog.at_level(logging.ERROR):
        final = trainer.save_model()
    assert (final / "adapter_config.json").is_file() and not (final / "merged").exists()
    assert "merged export failed" in caplog.text and "could not be read locally" in caplog.text
    record = json.loads((tmp_path / "o" / "run_record.json").read_text())
    assert record["trl_arguments"]["optim"] == "adamw_torch_fused"  # what the trainer received, read back


def test_a_checkpoint_of_another_optimizer_is_refused(tmp_path):
    from grpo_tool.checkpoints import changed_settings_problem

    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "run_record.json").write_text(json.dumps({"trl_arguments": {"optim": "adamw_8bit"}}))
    problem = changed_settings_problem(str(tmp_path / "checkpoint-3"), {"optim": "adamw_torch_fused"})
    assert "trained with trl_options.optim=adamw_8bit" in problem
    assert "gives trl_options.optim=adamw_torch_fused" in problem
    assert changed_settings_problem(str(tmp_path / "checkpoint-3"), {"optim": "adamw_8bit"}) is None
