"""The real SmolLM2-135M-Instruct, read from a GGUF file: special tokens, chat template, answers that end at the end
of a turn, a GRPO run that learns, and saved models that load without the GGUF."""

import json

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from config import build_config
from conftest import run_main
from data_loader import load_grpo_dataset
from grpo_tool.prompt_budget import fit_to_model
from grpo_tool.settings import GRPOConfig

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Name a colour of the sky.", "What is two plus two?"]


@pytest.fixture(scope="module")
def converted(smollm2_gguf):
    from grpo_tool.gguf_models import converted_gguf

    return converted_gguf(smollm2_gguf)


def test_gguf_becomes_a_model_with_its_end_of_turn_and_pad_tokens(converted, smollm2_gguf):
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2  # the GGUF metadata's eos
    assert tokenizer.pad_token_id is not None
    assert GenerationConfig.from_pretrained(converted).eos_token_id == 2
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    # The chat template reaches the model: prompts go as messages and render in ChatML.
    run = build_config(overrides={"model_name": str(smollm2_gguf), "dataset_name": "sample", "max_samples": 4})
    data = fit_to_model(load_grpo_dataset(run), tokenizer, run)
    prompt = data["train"][0]["prompt"]
    assert isinstance(prompt, list) and prompt[-1]["role"] == "user"
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")


def test_answers_end_at_the_end_of_the_turn_and_the_logs_hold_them_whole(smollm2_gguf, tmp_path):
    """Sampling stops at <|im_end|> (the GGUF's end of turn), which never reaches the text, and the generation log
    keeps each finished answer whole."""
    output_dir = tmp_path / "out"
    result = run_main("--eval-only", "--model", str(smollm2_gguf), "--dataset", "sample", "--max-eval-samples", "4",
                      "--max-generation-samples", "4", "--max-completion-length", "128", "--temperature", "0.3",
                      "--group-size", "2", "--per-device-eval-batch-size", "8",
                      "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((output_dir / "evaluation" / "generation_log_step_0.json").read_text())
    assert len(log) == 4 and not any("<|im_end|>" in entry["full_response"] for entry in log)
    finished = [entry for entry in log if not entry["truncated"]]
    assert len(finished) >= 2, log
    assert all(entry["full_response"].rstrip()[-1] in ".!?" for entry in finished), log


BREVITY = '''
def brevity_reward(completions, **kwargs):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [max(0.0, 1.0 - len(t.split()) / 20) for t in texts]
'''


def test_grpo_on_the_real_model_learns_and_saves_models_that_load(smollm2_gguf, converted, tmp_path):
    (tmp_path / "brevity.py").write_text(BREVITY)
    (tmp_path / "rewards.json").write_text(json.dumps({"accuracy_weight": 0, "length_weight": 0,
                                                       "quality_weight": 0}))
    output_dir = tmp_path / "out"
    # Six steps at a high learning rate: brevity is quick to learn, and each step of a 135M model takes seconds here.
    result = run_main("--model", str(smollm2_gguf), "--dataset", "sample", "--max-samples", "64", "--max-steps", "6",
                      "--batch-size", "8", "--gradient-accumulation-steps", "1", "--group-size", "4",
                      "--max-completion-length", "24", "--learning-rate", "3e-3", "--logging-steps", "1",
                      "--eval-steps", "6", "--save-steps", "6", "--max-eval-samples", "4",
                      "--max-generation-samples", "4", "--reward-config", str(tmp_path / "rewards.json"),
                      "--reward-fn", f"{tmp_path / 'brevity.py'}:brevity_reward", "--save-merged",
                      "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((output_dir / "final_model" / "trainer_state.json").read_text())["log_history"]
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.2, rewards
    # TRL's completion mask ends at <|im_end|>: completions terminate there, and the logs count them.
    assert any(entry.get("completions/mean_terminated_length", 0) > 0 for entry in history)
    log = json.loads((output_dir / "generation_logs" / "generation_log_step_6.json").read_text())
    # The chat prompts reach the logs as conversations (finished answers there: the --eval-only test above).
    assert log and all(entry["prompt"].startswith("user: ") for entry in log), log
    # The adapter loads on the converted base and the merged model loads alone, both as ordinary transformers models.
    from peft import AutoPeftModelForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(output_dir / "final_model")
    merged = AutoModelForCausalLM.from_pretrained(output_dir / "final_model" / "merged")
    adapter = AutoPeftModelForCausalLM.from_pretrained(output_dir / "final_model")
    encoded = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[0]}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
    with torch.no_grad():
        assert torch.allclose(adapter(**encoded).logits, merged(**encoded).logits, atol=1e-3)
        generated = merged.generate(**encoded, max_new_tokens=16, do_sample=False)
    assert generated.shape[1] > encoded["input_ids"].shape[1]
    assert "quantization_config" not in json.loads((output_dir / "final_model" / "merged" / "config.json").read_text())


DEGENERATE = ["Dames.", "Merci, mat.", "Tides tides tides.", "Yes no the the."]


def test_the_base_model_finds_degenerate_answers_implausible_and_its_own_plausible(converted):
    """The base-model measure on the real model: a LoRA model whose adapter has not moved (B = 0) scores its own
    sampled answers low and flat (no drift from the base), and the nonsense a hacked run writes high."""
    from peft import LoraConfig, get_peft_model

    from grpo_tool.base_view import BaseView, completion_logps, measures
    from grpo_tool.sampling import encode_prompts, sample

    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(converted),
                           LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    view = BaseView(adapter=True)
    prompts = [[{"role": "user", "content": question}] for question in QUESTIONS + ["Say something kind about tides."]]
    own = sample(model, tokenizer, datasets.Dataset.from_dict({"prompt": prompts}),
                 GRPOConfig(max_completion_length=32), view=view)
    assert all(entry["base_drift"] == pytest.approx(0, abs=1e-4) for entry in own)  # the adapter is still zero
    own_nll = sum(entry["base_nll"] for entry in own) / len(own)

    encoded = encode_prompts(tokenizer, prompts)
    answers = tokenizer([answer + "<|im_end|>" for answer in DEGENERATE], padding=True, padding_side="right",
                        add_special_tokens=False, return_tensors="pt")
    ids = torch.cat([encoded["input_ids"], answers["input_ids"]], dim=1)
    mask = torch.cat([encoded["attention_mask"], answers["attention_mask"]], dim=1)
    policy, base = completion_logps(model, view, ids, mask, answers["input_ids"].shape[1])
    degenerate_nll = measures(policy, base, answers["attention_mask"])["base_nll"]
    assert own_nll < 2.5 and degenerate_nll > own_nll + 2, (own_nll, degenerate_nll, own)
