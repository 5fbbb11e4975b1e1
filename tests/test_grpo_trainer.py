"""The trainer's glue that runs before TRL: machine checks, W&B set-up, dataset shapes and the prompt budget."""

import copy
import os

import datasets
import pytest
from transformers import AutoTokenizer

from config import GRPOConfig
from errors import UserError
from grpo_trainer import (GRPOTrainer, as_dataset_dict, check_model_fits_machine, choose_backend, configure_wandb,
                          fit_prompts, lora_targets, prompt_token_count, uses_chat)


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


def test_prompt_budget_drops_long_prompts_and_refuses_when_nothing_fits(tiny_model_cache):
    from tiny_model import ensure_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    rows = datasets.Dataset.from_list([{"prompt": "short"}, {"prompt": "long " * 200}])
    kept = fit_prompts(rows, tokenizer, budget=50, split="train")
    assert kept["prompt"] == ["short"]
    chat = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "chat " * 200}]}])
    with pytest.raises(UserError, match="longer than 50 tokens.*prompt_overflow to truncate"):
        fit_prompts(chat, tokenizer, budget=50, split="eval")


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_cache):
    from tiny_model import ensure_tiny_model

    return AutoTokenizer.from_pretrained(ensure_tiny_model())


def test_prompts_take_the_form_the_tokenizer_expects(tiny_tokenizer):
    rows = datasets.Dataset.from_list([{"prompt": "What is 2 + 2?"}, {"prompt": "Name a colour."}])
    as_chat = fit_prompts(rows, tiny_tokenizer, budget=100, split="train", chat=True)
    assert as_chat[0]["prompt"] == [{"role": "user", "content": "What is 2 + 2?"}]
    chat_rows = datasets.Dataset.from_list([{"prompt": [{"role": "system", "content": "Be brief."},
                                                        {"role": "user", "content": "Hi"}]}])
    as_text = fit_prompts(chat_rows, tiny_tokenizer, budget=100, split="train", chat=False)
    assert as_text[0]["prompt"] == "System: Be brief.\n\nUser: Hi\n\nAssistant:"
    assert uses_chat("auto", tiny_tokenizer, "tiny") and not uses_chat("text", tiny_tokenizer, "tiny")


def test_chat_format_needs_a_chat_template(tiny_tokenizer):
    tiny_tokenizer = copy.deepcopy(tiny_tokenizer)
    tiny_tokenizer.chat_template = None
    assert not uses_chat("auto", tiny_tokenizer, "base-model")
    with pytest.raises(UserError, match="has no chat template"):
        uses_chat("chat", tiny_tokenizer, "base-model")


def test_truncation_keeps_the_end_of_text_prompts(tiny_tokenizer):
    long_prompt = "filler words here " * 60 + "TL;DR:"
    rows = datasets.Dataset.from_list([{"prompt": long_prompt}, {"prompt": "short"}])
    fitted = fit_prompts(rows, tiny_tokenizer, budget=30, split="train", truncate=True)
    assert len(fitted) == 2
    assert fitted[0]["prompt"].endswith("TL;DR:") and prompt_token_count(tiny_tokenizer, fitted[0]["prompt"]) <= 30
    assert fitted[1]["prompt"] == "short"


def test_truncation_drops_old_turns_first(tiny_tokenizer):
    conversation = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "tell me a long story " * 20},
                    {"role": "assistant", "content": "once upon a time " * 20},
                    {"role": "user", "content": "Now summarise it."}]
    rows = datasets.Dataset.from_list([{"prompt": conversation}])
    fitted = fit_prompts(rows, tiny_tokenizer, budget=40, split="train", chat=True, truncate=True)
    assert fitted[0]["prompt"] == [conversation[0], conversation[3]]
    one_long_turn = [{"role": "user", "content": "word " * 200 + "Question?"}]
    cut = fit_prompts(datasets.Dataset.from_list([{"prompt": one_long_turn}]), tiny_tokenizer, budget=40,
                      split="train", chat=True, truncate=True)[0]["prompt"]
    assert cut[0]["content"].endswith("Question?") and prompt_token_count(tiny_tokenizer, cut) <= 40


def test_streamed_prompts_are_fitted_lazily(tiny_tokenizer):
    rows = datasets.Dataset.from_list([{"prompt": "short"}, {"prompt": "long " * 200}]).to_iterable_dataset()
    fitted = fit_prompts(rows, tiny_tokenizer, budget=20, split="train", chat=True)
    assert [row["prompt"] for row in fitted] == [[{"role": "user", "content": "short"}]]
