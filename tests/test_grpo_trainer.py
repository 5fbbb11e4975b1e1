"""The trainer's glue that runs before TRL: machine checks, backend choice, W&B set-up and dataset shapes."""

import os

import datasets
import pytest

from config import GRPOConfig
from errors import UserError
from grpo_trainer import (GRPOTrainer, as_dataset_dict, check_model_fits_machine, choose_backend, configure_wandb,
                          lora_targets)


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
    with pytest.raises(UserError, match="use_vllm needs a CUDA GPU"):
        check_model_fits_machine(GRPOConfig(model_name="tiny", use_vllm=True), cuda_available=False)
    monkeypatch.setattr("grpo_trainer.package_installed", lambda name: name != "vllm")
    with pytest.raises(UserError, match="vllm package is not installed"):
        check_model_fits_machine(GRPOConfig(model_name="tiny", use_vllm=True), cuda_available=True)


def test_lora_targets():
    assert lora_targets(GRPOConfig(), "transformers") == "all-linear"
    assert "down_proj" in lora_targets(GRPOConfig(), "unsloth")
    assert lora_targets(GRPOConfig(lora_target_modules="q_proj, v_proj"), "unsloth") == ["q_proj", "v_proj"]


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
    assert configure_wandb(GRPOConfig(wandb_project=None)) == []
    assert configure_wandb(GRPOConfig(wandb_project="demo", output_dir=str(tmp_path))) == ["wandb"]
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_PROJECT"] == "demo"


def test_dataset_shapes_are_accepted():
    rows = datasets.Dataset.from_list([{"prompt": f"question {i}"} for i in range(20)])
    config = GRPOConfig()
    split = as_dataset_dict(rows, config)
    assert (len(split["train"]), len(split["eval"])) == (18, 2)
    assert as_dataset_dict((None, split), config) is not None
    with_test = as_dataset_dict(datasets.DatasetDict({"train": rows, "test": rows.select(range(3))}), config)
    assert len(with_test["eval"]) == 3 and len(with_test["train"]) == 20
    with pytest.raises(UserError):
        as_dataset_dict([1, 2, 3], config)
