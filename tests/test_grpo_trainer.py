"""The trainer's glue that runs before TRL: machine checks, W&B set-up, dataset shapes and the prompt budget."""

import os

import datasets
import pytest
from transformers import AutoTokenizer

from config import GRPOConfig
from errors import UserError
from grpo_trainer import as_dataset_dict, check_model_fits_machine, choose_backend, configure_wandb, fit_prompts


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


def test_backend_reason_names_the_machine():
    assert "no CUDA GPU" in choose_backend(GRPOConfig(), cuda_available=False)[1]
    assert "4-bit" in choose_backend(GRPOConfig(load_in_4bit=True), cuda_available=True)[1]


def test_wandb_never_prompts_without_credentials(monkeypatch, tmp_path):
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


def test_prompt_budget_drops_long_prompts_and_refuses_when_nothing_fits(tiny_model_cache):
    from tiny_model import ensure_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    rows = datasets.Dataset.from_list([{"prompt": "short"}, {"prompt": "long " * 200}])
    kept = fit_prompts(rows, tokenizer, budget=50, split="train")
    assert kept["prompt"] == ["short"]
    chat = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "chat " * 200}]}])
    with pytest.raises(UserError, match="longer than 50 tokens"):
        fit_prompts(chat, tokenizer, budget=50, split="eval")
