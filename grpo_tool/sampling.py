"""Sampling completions outside TRL's loop, as TRL samples them: for the generation logs and for the reward check.
Heavy: imported only after backend.prepare (see grpo_tool/__init__.py).

    from data_loader import load_grpo_dataset; from grpo_tool.backend import prepare
    from grpo_tool.models import load_policy
    config = GRPOConfig(model_name="tiny", dataset_name="sample")
    model, tokenizer, _ = load_policy(config, prepare(config))
    samples = sample(model, tokenizer, load_grpo_dataset(config)["eval"].select(range(2)), config, per_prompt=4)
    assert len(samples) == 8 and samples[0]["prompt"] == samples[3]["prompt"] != samples[4]["prompt"]    # 4 per prompt
"""

from __future__ import annotations

import torch

from grpo_tool.base_view import BaseView, completion_logps, row_measures
from grpo_tool.components import Component
from grpo_tool.scoring import score_completions
from grpo_tool.settings import GRPOConfig


def encode_prompts(tokenizer, prompts: list):
    if isinstance(prompts[0], list):
        # Rendered to text first: apply_chat_template pads on the tokenizer's side, and generation needs the left.
        texts = [tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
                 for prompt in prompts]
        return tokenizer(texts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    return tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")


def sample(model, tokenizer, rows, config: GRPOConfig, per_prompt: int = 1, view: BaseView | None = None
           ) -> list[dict]:
    """`per_prompt` completions for each row's prompt, sampled as TRL samples (temperature, top_p, length cap) from a
    fixed seed. One dict per completion, grouped by prompt; `reward_input` is the completion in the shape TRL hands
    reward functions (text, or a one-message list for chat prompts). With a base `view`, each also has how it looks
    to the starting model (`base_nll`, `base_drift`: grpo_tool/base_view.py)."""
    prompts = list(rows["prompt"])
    if not prompts:
        return []
    chat = isinstance(prompts[0], list)
    encoded = {key: value.to(model.device) for key, value in encode_prompts(tokenizer, prompts).items()}
    was_training = model.training
    model.eval()
    # A private RNG stream: samples are reproducible and training's own sampling is left untouched.
    with torch.no_grad(), torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        output = model.generate(**encoded, do_sample=True, temperature=config.temperature, top_p=config.top_p,
                                top_k=0, max_new_tokens=config.max_completion_length,
                                num_return_sequences=per_prompt, pad_token_id=tokenizer.pad_token_id)
    if was_training:
        model.train()
    prompt_length = encoded["input_ids"].shape[1]
    samples, completion_mask = [], torch.zeros_like(output[:, prompt_length:])
    for index, ids in enumerate(output[:, prompt_length:].tolist()):
        ended = tokenizer.eos_token_id in ids
        tokens = ids.index(tokenizer.eos_token_id) + 1 if ended else len(ids)
        completion_mask[index, :tokens] = 1
        text = tokenizer.decode(ids[:tokens], skip_special_tokens=True)
        samples.append({"prompt": prompts[index // per_prompt], "completion": text, "completion_tokens": tokens,
                        "truncated": not ended,
                        "reward_input": [{"role": "assistant", "content": text}] if chat else text})
    if view is not None and view.available and completion_mask.shape[1]:
        prompt_mask = encoded["attention_mask"].repeat_interleave(per_prompt, dim=0)
        mask = torch.cat([prompt_mask, completion_mask], dim=1)
        policy, base = completion_logps(model, view, output, mask, completion_mask.shape[1])
        for entry, measured in zip(samples, row_measures(policy, base, completion_mask)):
            entry.update(measured)
    return samples


def probe_sampler(config: GRPOConfig, evaluation, components: list[Component], view: BaseView | None = None):
    """The generation logger's sampling: one scored completion for each of the first max_generation_samples
    evaluation prompts, the same prompts and seed at every evaluation, with the base-model measure per answer."""
    rows = evaluation.select(range(min(config.max_generation_samples, len(evaluation))))
    columns = {name: list(rows[name]) for name in rows.column_names if name != "prompt"}

    def sample_and_score(model, tokenizer) -> list[dict]:
        samples = sample(model, tokenizer, rows, config, view=view)
        completions = [entry.pop("reward_input") for entry in samples]
        scores = score_completions(components, completions, prompts=list(rows["prompt"]), **columns)
        for index, (entry, score) in enumerate(zip(samples, scores)):
            entry["rewards"] = {name: None if value is None else round(value, 4) for name, value in score.items()}
            entry["columns"] = {name: values[index] for name, values in columns.items()}  # what the rewards saw
        return samples

    return sample_and_score
