"""--plan: model shapes without weights, the memory arithmetic by part, what would fit, plan.json, the start-up check
and the longest-prompts-first order."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from config import build_config
from conftest import run_main
from grpo_tool.model_shapes import KNOWN_SHAPES, family_key, find_shape
from grpo_tool.plan.device import GB, Device
from grpo_tool.plan.fitting import make_plan, run_check, what_would_fit
from grpo_tool.plan.memory import count_parts, peak_of
from grpo_tool.settings import GRPOConfig

# Published parameter counts (billions) of the presets' checkpoints and of two small models.
PUBLISHED = {"llama-3.1-8b": 8.03, "llama-3.1-70b": 70.55, "gemma-2-9b": 9.24, "qwen2.5-7b": 7.62,
             "Qwen/Qwen2.5-0.5B-Instruct": 0.494, "HuggingFaceTB/SmolLM2-135M-Instruct": 0.1345}
H100 = Device.gpu(80, "NVIDIA H100 80GB HBM3")
PROMPT = (200, "given")


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_shapes_without_weights_count_the_published_parameters(name):
    assert find_shape(name).parameters / 1e9 == pytest.approx(PUBLISHED[name], rel=0.005)


def test_family_key_reads_through_owners_and_variant_suffixes():
    assert family_key("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit") == "llama-3.1-8b"
    assert family_key("unsloth/gemma-2-9b-it-bnb-4bit") == "gemma-2-9b"
    assert family_key("SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m"
    assert set(KNOWN_SHAPES) >= {"llama-3.1-8b", "llama-3.1-70b", "gemma-2-9b", "qwen2.5-7b"}


def test_a_local_config_json_is_read(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 256, "vocab_size": 1000, "tie_word_embeddings": True}))
    shape = find_shape(str(tmp_path))
    assert (shape.layers, shape.kv_width, shape.vocab) == (3, 64, 1000) and "config.json" in shape.source


def test_the_real_models_gguf_header_gives_its_shape(smollm2_gguf):
    shape = find_shape(str(smollm2_gguf))
    assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.vocab) == (576, 30, 9, 3, 49152)
    assert shape.parameters == find_shape("HuggingFaceTB/SmolLM2-135M-Instruct").parameters


def parts(config, device=H100, backend="transformers", prompt=200, checkpointing=False):
    shape = find_shape(config.model_name)
    return {part.name: part.bytes for part in count_parts(config, shape, device, backend, prompt, checkpointing)}


def test_each_part_moves_with_the_setting_it_depends_on():
    base = GRPOConfig(model_name="qwen2.5-7b", per_device_train_batch_size=8, max_completion_length=256)
    one = parts(base)
    doubled = parts(replace(base, per_device_train_batch_size=16))
    assert doubled["activations"] == pytest.approx(2 * one["activations"])
    assert doubled["logits"] == pytest.approx(2 * one["logits"]) and doubled["weights"] == one["weights"]
    assert parts(base, checkpointing=True)["activations"] < one["activations"] / 5
    unsloth = parts(base, backend="unsloth")
    assert parts(replace(base, load_in_4bit=False))["weights"] > 2.5 * unsloth["weights"]  # embeddings stay 16-bit
    # peft's k-bit preparation upcasts what is not quantised (embeddings, head, norms) to fp32: 2 more bytes each.
    shape = find_shape("qwen2.5-7b")
    unquantised = shape.parameters - shape.layers * shape.layer_linear_parameters
    assert one["weights"] - unsloth["weights"] == pytest.approx(2 * unquantised)
    # Full fine-tuning on a GPU keeps fp32 weights (and fp32 gradients and Adam moments): 4 bytes a parameter each.
    full = parts(replace(base, use_lora=False, load_in_4bit=False))
    assert full["weights"] == full["gradients"] == pytest.approx(4 * shape.parameters)
    # The reference model: a copy of the weights for full fine-tuning, nothing with LoRA (the adapter is switched off)
    assert "reference model" not in parts(replace(base, beta=0.04))
    assert parts(replace(base, beta=0.04, use_lora=False, load_in_4bit=False))["reference model"] > 10 * GB
    assert parts(replace(base, use_vllm=True))["vLLM"] == pytest.approx(0.3 * 80 * GB)
    # Unsloth's colocated engine shares the weights with training: counted once, inside vLLM's share.
    assert parts(replace(base, use_vllm=True), backend="unsloth")["weights"] == 0
    assert parts(base, backend="unsloth")["logits"] < one["logits"] / 3  # Unsloth's loss goes a completion at a time


def test_the_peak_is_what_stays_plus_the_largest_phase():
    config = GRPOConfig(model_name="llama-3.1-8b")
    plan = make_plan(config, H100, prompt=PROMPT)
    stays = sum(part.bytes for part in plan.parts if part.phase == "always")
    phases = {phase: sum(part.bytes for part in plan.parts if part.phase == phase)
              for phase in ("training", "generation", "evaluation")}
    assert min(phases.values()) > 0
    assert plan.peak == pytest.approx(stays + max(phases.values()))  # the phases take turns: not their sum


def test_what_would_fit_is_checked_against_the_same_arithmetic():
    config = GRPOConfig(model_name="llama-3.1-8b", max_completion_length=2048, max_seq_length=4096)
    plan = make_plan(config, Device.gpu(24), prompt=(2048, "given"))
    assert not plan.fits
    ideas = what_would_fit(plan)
    length = next(idea for idea in ideas if idea.startswith("max_completion_length"))
    shorter = replace(config, max_completion_length=int(length.split()[1]))
    assert make_plan(shorter, Device.gpu(24), prompt=(2048, "given"), backend=plan.backend).fits
    longer = replace(config, max_completion_length=int(length.split()[1]) + 1)
    assert not make_plan(longer, Device.gpu(24), prompt=(2048, "given"), backend=plan.backend).fits


def test_the_70b_preset_is_planned_on_a_cpu_machine_for_a_gpu(tmp_path):
    result = run_main("--plan", "--model", "llama-3.1-70b", "--gpu-memory", "24", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "does NOT fit in 24.0 GB" in result.stdout and "would fit:" in result.stdout
    record = json.loads((tmp_path / "plan.json").read_text())
    assert record["fits"] is False and record["peak"] > 24 and record["backend"] == "unsloth"
    assert {part["name"] for part in record["parts"]} >= {"weights", "activations", "logits", "KV cache", "runtime"}


def test_plan_on_the_quick_test_writes_only_plan_json(tmp_path):
    out = tmp_path / "out"
    result = run_main("--plan", "--quick-test", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert [path.name for path in out.iterdir()] == ["plan.json"]
    record = json.loads((out / "plan.json").read_text())
    assert record["fits"] is True and 0.3 < record["peak"] < 1.5
    assert record["prompt_source"].startswith("the longest training prompt") and record["seconds_per_step"] > 0
    assert "peak" in result.stdout and "s per step" in result.stdout


def test_a_run_that_will_not_fit_is_warned_before_its_first_step(monkeypatch, caplog):
    from transformers import LlamaConfig

    from grpo_tool.backend import Machine
    from grpo_tool.plan import fitting

    monkeypatch.setattr(fitting, "available_memory", lambda: 3.9 * 1024**3)
    monkeypatch.setattr(fitting, "resident_memory", lambda: 100 * 1024**2)
    config = build_config(mode="quick_test", overrides={"share_prompts": False})  # each prompt once per completion
    model_config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    machine = Machine("transformers", "test", False, "float32", False)
    with caplog.at_level(logging.INFO):
        plan = run_check(config, machine, model_config, 80)
    assert not plan.fits and plan.prompt_tokens == 80
    warning = next(record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    assert "will likely run out of memory at the first step" in warning
    assert "per_device_train_batch_size 3 with group_size 3" in warning
    shared = run_check(build_config(mode="quick_test"), machine, model_config, 80)  # each prompt once per group
    unshared_activations, shared_activations = (next(part.bytes for part in each.parts if part.name == "activations")
                                                for each in (plan, shared))
    assert shared.peak < plan.peak and shared_activations < 0.7 * unshared_activations


def test_the_longest_prompts_make_the_first_generation_batch():
    from trl.trainer.utils import RepeatSampler

    from grpo_tool.trainer_hooks import LongestFirstSampler

    lengths = [5, 90, 7, 3, 80, 6, 4, 2, 1, 70, 8, 9]
    plain = list(RepeatSampler(list(range(12)), mini_repeat_count=4, batch_size=3, repeat_count=1, seed=0))
    sampler = LongestFirstSampler(RepeatSampler(list(range(12)), mini_repeat_count=4, batch_size=3, seed=0), lengths)
    first_pass = list(sampler)
    assert set(first_pass[:12]) == {1, 4, 9}  # the three longest prompts, each as a whole group of 4
    assert all(len(set(first_pass[start:start + 4])) == 1 for start in range(0, len(first_pass), 4))
    assert sorted(first_pass) == sorted(plain) and len(first_pass) == len(sampler)  # every prompt as often as before
    assert set(plain[:12]) != {1, 4, 9}


def test_peak_of_takes_the_largest_phase():
    from grpo_tool.plan.memory import Part

    assert peak_of([Part("a", 1, "always", ""), Part("b", 5, "training", ""), Part("c", 3, "generation", ""),
                    Part("d", 4, "generation", "")]) == 8


def test_a_run_starts_with_its_longest_prompts(tmp_path):
    from grpo_tool.trainer_hooks import LongestFirstSampler
    from grpo_trainer import GRPOTrainer

    config = build_config(mode="quick_test", overrides={"max_steps": 1, "output_dir": str(tmp_path), "eval_steps": 5,
                                                        "save_steps": 5})
    trainer = GRPOTrainer(config)
    trainer.train()
    lengths = trainer.prompt_lengths["train"]
    sampler = trainer.trainer._get_train_sampler()
    assert isinstance(sampler, LongestFirstSampler)
    first = set(list(sampler)[:config.per_device_train_batch_size])  # one generation batch
    assert sorted((lengths[index] for index in first), reverse=True) == sorted(lengths, reverse=True)[:len(first)]


def test_a_hub_model_once_downloaded_is_read_from_the_hugging_face_cache(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--someone--tiny-chat" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({
        "text_config": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
                        "intermediate_size": 512, "vocab_size": 3000, "tie_word_embeddings": False}}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    shape = find_shape("someone/tiny-chat")
    assert (shape.hidden, shape.kv_heads, shape.tied) == (256, 8, False) and "Hugging Face cache" in shape.source


@pytest.mark.parametrize("config", [[1, 2, 3], "hello", {"hidden_size": 1e300}, {"hidden_size": 0},
                                    {"num_hidden_layers": -2}, {"vocab_size": "abc"}, {"num_attention_heads": None}])
def test_a_config_json_that_is_no_model_shape_is_one_error(config):
    from grpo_tool.errors import UserError
    from grpo_tool.model_shapes import shape_from_config

    good = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
            "vocab_size": 512}
    with pytest.raises(UserError, match="my config"):
        shape_from_config({**good, **config} if isinstance(config, dict) else config, "my config")


def test_a_gguf_file_without_a_models_keys_is_one_error(tmp_path):
    import gguf

    from grpo_tool.errors import UserError

    writer = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(UserError, match="odd.gguf"):
        find_shape(str(tmp_path / "odd.gguf"))
