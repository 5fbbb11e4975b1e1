"""The trainer's glue that runs before TRL: machine checks, backend choice, W&B set-up and dataset shapes."""

import os

import datasets
import pytest

from data_loader import as_dataset_dict
from grpo_tool.backend import check_model_fits_machine, choose_backend, precision
from grpo_tool.errors import UserError
from grpo_tool.settings import GRPOConfig
from grpo_trainer import GRPOTrainer


@pytest.mark.parametrize("model_name", ["llama-3.1-8b", "llama-3.1-70b", "gemma-2-9b", "qwen2.5-7b",
                                        "unsloth/llama-3.1-8b-bnb-4bit", "someone/model-bnb-4bit"])
def test_big_or_4bit_models_are_refused_on_a_cpu(model_name):
    with pytest.raises(UserError) as error:
        check_model_fits_machine(GRPOConfig(model_name=model_name), cuda_available=False)
    assert "--quick-test" in str(error.value) and "--model tiny" in str(error.value)
    check_model_fits_machine(GRPOConfig(model_name=model_name), cuda_available=True)


def test_small_models_pass_the_cpu_check():
    for name in ("tiny", "Qwen/Qwen2.5-0.5B-Instruct"):
        check_model_fits_machine(GRPOConfig(model_name=name), cuda_available=False)


@pytest.mark.parametrize("backend, cuda, unsloth, expected", [
    ("auto", True, True, "unsloth"),
    ("auto", True, False, "transformers"),
    ("auto", False, True, "transformers"),
    ("auto", False, False, "transformers"),
    ("transformers", True, True, "transformers"),
    ("unsloth", True, True, "unsloth"),
])
def test_backend_choice(backend, cuda, unsloth, expected):
    chosen, reason = choose_backend(GRPOConfig(backend=backend), cuda_available=cuda, unsloth_available=unsloth)
    assert chosen == expected and reason


def test_backend_reasons_say_why():
    assert "no CUDA GPU" in choose_backend(GRPOConfig(), False, True)[1]
    assert "requirements-gpu.txt" in choose_backend(GRPOConfig(), True, False)[1]
    assert "4-bit" in choose_backend(GRPOConfig(load_in_4bit=True), True, True)[1]
    assert "16-bit" in choose_backend(GRPOConfig(load_in_4bit=False), True, True)[1]


@pytest.mark.parametrize("cuda, unsloth, fragment", [(False, True, "needs a CUDA GPU"),
                                                     (True, False, "not installed")])
def test_unsloth_asked_for_where_it_cannot_run(cuda, unsloth, fragment):
    with pytest.raises(UserError, match=fragment):
        choose_backend(GRPOConfig(backend="unsloth"), cuda_available=cuda, unsloth_available=unsloth)


def test_vllm_needs_cuda_and_the_package(monkeypatch):
    with pytest.raises(UserError, match="--use-vllm needs a CUDA GPU"):
        check_model_fits_machine(GRPOConfig(model_name="tiny", use_vllm=True), cuda_available=False)
    monkeypatch.setattr("grpo_tool.backend.package_installed", lambda name: name != "vllm")
    with pytest.raises(UserError, match="vllm package is not installed"):
        check_model_fits_machine(GRPOConfig(model_name="tiny", use_vllm=True), cuda_available=True)


def test_a_process_launched_for_deepspeed_without_it_is_one_error(monkeypatch):
    from grpo_tool import backend

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert backend.deepspeed_launch_problem(cuda=False, bf16=False) is None
    monkeypatch.setattr(backend, "package_installed", lambda name: name != "deepspeed")
    assert backend.deepspeed_launch_problem(cuda=False, bf16=False).startswith(
        "this process was launched to run DeepSpeed (ACCELERATE_USE_DEEPSPEED), which is not installed here")


def test_lora_targets(tiny_model_cache):
    from transformers import AutoModelForCausalLM

    from grpo_tool.models import lora_targets
    from grpo_tool.tiny_model import ensure_tiny_model

    assert lora_targets(GRPOConfig()) == "all-linear"  # peft resolves it
    # Unsloth is given the model's own linear layers (its families name them differently), the head left out.
    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model())
    assert lora_targets(GRPOConfig(), model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                                 "v_proj"]
    assert lora_targets(GRPOConfig(lora_target_modules="q_proj, v_proj"), model) == ["q_proj", "v_proj"]


def test_remote_code_is_off_unless_asked(monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    seen = []

    def fake_from_pretrained(source, **options):
        seen.append(options.get("trust_remote_code"))
        raise OSError("stop here")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    for asked in (False, True):
        trainer = GRPOTrainer(GRPOConfig(model_name="tiny", use_lora=False, trust_remote_code=asked,
                                         output_dir=str(tmp_path)))
        with pytest.raises(UserError):
            trainer.load_model()
    assert seen == [False, True]


def test_wandb_never_prompts_without_credentials(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what configure_wandb sets must not outlive the test
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    from grpo_tool.trl_setup import configure_wandb

    assert configure_wandb(GRPOConfig(wandb_project=None)) == []
    assert configure_wandb(GRPOConfig(wandb_project="demo", output_dir=str(tmp_path))) == ["wandb"]
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_PROJECT"] == "demo"


def test_dataset_shapes_are_accepted():
    rows = datasets.Dataset.from_list([{"prompt": f"question {i}"} for i in range(20)])
    config = GRPOConfig()
    split = as_dataset_dict(rows, config)
    assert (len(split["train"]), len(split["eval"])) == (18, 2)
    pair = as_dataset_dict((None, split), config)  # the original's (data_loader, dataset) pair
    assert (len(pair["train"]), len(pair["eval"])) == (18, 2)
    with_test = as_dataset_dict(datasets.DatasetDict({"train": rows, "test": rows.select(range(3))}), config)
    assert len(with_test["eval"]) == 3 and len(with_test["train"]) == 20
    no_evaluation = as_dataset_dict(datasets.DatasetDict({"train": rows, "eval": rows.select([])}), config)
    assert len(no_evaluation["eval"]) == 0 and len(no_evaluation["train"]) == 20  # an empty eval split: none held out
    with pytest.raises(UserError):
        as_dataset_dict([1, 2, 3], config)


def test_trl_options_pass_through_to_trl_and_are_checked_by_it():
    from grpo_tool.backend import Machine
    from grpo_tool.trl_setup import trl_arguments

    machine = Machine("transformers", "test", cuda=False, weights_dtype="float32", bf16=False)
    config = GRPOConfig(model_name="tiny", gradient_checkpointing=False,
                        trl_options={"scale_rewards": "batch", "epsilon_high": 0.28, "num_iterations": 2})
    args = trl_arguments(config, machine, model=None, evaluate=False)
    assert (args.scale_rewards, args.epsilon_high, args.num_iterations) == ("batch", 0.28, 2)
    assert (args.num_generations, args.learning_rate) == (config.group_size, config.learning_rate)
    with pytest.raises(UserError, match="TRL refused them"):
        trl_arguments(GRPOConfig(model_name="tiny", gradient_checkpointing=False,
                                 trl_options={"generation_batch_size": 5}), machine, model=None, evaluate=False)


def test_trl_option_names_are_checked_before_anything_loads():
    from config import build_config

    with pytest.raises(UserError) as error:
        build_config(overrides={"model_name": "tiny", "trl_options": {"mask_truncated_completion": True,
                                                                      "beta": 0.1}})
    assert "did you mean 'mask_truncated_completions'" in str(error.value)
    assert "beta is set by this tool's own setting beta" in str(error.value)


def test_precision_is_one_rule():
    assert precision(GRPOConfig(), cuda=False, bf16_supported=False) == ("float32", False)
    assert precision(GRPOConfig(bf16=True), cuda=False, bf16_supported=False) == ("float32", True)
    assert precision(GRPOConfig(), cuda=True, bf16_supported=True) == ("bfloat16", True)
    assert precision(GRPOConfig(), cuda=True, bf16_supported=False) == ("float16", False)


COUNTING_REWARD = '''
import os
with open(os.environ["REWARD_IMPORTS"], "a") as counter:
    counter.write("imported\\n")

def brevity_reward(completions, **kwargs):
    return [1.0 / (1 + len(str(c))) for c in completions]
'''


def test_a_custom_reward_file_is_imported_once_per_run(tmp_path, monkeypatch):
    """Its top-level code runs once: config check, reward resolution, training and generation logs share it."""
    from conftest import run_main

    (tmp_path / "counting.py").write_text(COUNTING_REWARD)
    monkeypatch.setenv("REWARD_IMPORTS", str(tmp_path / "imports.txt"))
    result = run_main("--quick-test", "--max-steps", "2", "--eval-steps", "2", "--save-steps", "2",
                      "--reward-fn", f"{tmp_path / 'counting.py'}:brevity_reward", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "imports.txt").read_text().splitlines() == ["imported"]


FAKE_UNSLOTH = '''
import sys
IMPORTED_AFTER = [name for name in ("transformers", "trl", "peft") if name in sys.modules]

class FastLanguageModel:
    @staticmethod
    def from_pretrained(**options):
        raise OSError("fake unsloth: no weights here")
'''


@pytest.mark.slow
def test_unsloth_is_imported_before_transformers_trl_and_peft(tmp_path):
    """The whole command line on a (pretended) CUDA machine with a stand-in unsloth package: by the time unsloth is
    imported, none of the libraries it patches may be."""
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "unsloth").mkdir()
    (tmp_path / "unsloth" / "__init__.py").write_text(FAKE_UNSLOTH)
    # TRL's arguments, built before the model loads, select the (pretended) device.
    script = ("import sys, torch\ntorch.cuda.is_available = lambda: True\ntorch.cuda.is_bf16_supported = lambda: True\n"
              "torch.cuda.set_device = lambda device: None\n"
              f"sys.path[:0] = [{str(tmp_path)!r}, {str(ROOT)!r}]\nimport train_grpo\n"
              f"code = train_grpo.main(['--quick-test', '--output-dir', {str(tmp_path / 'o')!r}])\n"
              "print('AFTER', sys.modules['unsloth'].IMPORTED_AFTER, 'CODE', code)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert "AFTER [] CODE 2" in result.stdout, result.stdout + result.stderr[-3000:]
    assert "fake unsloth: no weights here" in result.stderr


def test_the_python_api_checks_its_arguments_with_the_cli_messages(tmp_path):
    import datasets

    from config import build_config
    from grpo_tool.errors import UserError
    from grpo_trainer import GRPOTrainer

    with pytest.raises(UserError, match="GRPOTrainer takes a GRPOConfig, got str 'tiny'"):
        GRPOTrainer("tiny")
    trainer = GRPOTrainer(build_config(mode="quick_test", overrides={"output_dir": str(tmp_path / "out")}))
    with pytest.raises(UserError, match=r"the dataset: unrecognised columns \(text\)"):
        trainer.load_data(datasets.Dataset.from_list([{"text": f"t{i}"} for i in range(10)]))
    # A layout the command line reads is read the same from a Dataset: GSM8K's question/answer.
    data = trainer.load_data(datasets.Dataset.from_list([{"question": f"{i} + 1?", "answer": f"... #### {i + 1}"}
                                                         for i in range(20)]))
    assert data["train"][0]["answer"] == str(int(data["train"][0]["prompt"].split()[0]) + 1)
    with pytest.raises(UserError, match="nothing has been trained yet: call train"):
        trainer.save_model()
    assert not (tmp_path / "out").exists()
