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

import asyncio
import inspect

import torch

from grpo_tool.base_view import BaseView, completion_logps, row_measures
from grpo_tool.components import Component
from grpo_tool.errors import UserError
from grpo_tool.messages import completion_text
from grpo_tool.scoring import score_completions
from grpo_tool.settings import GRPOConfig
from grpo_tool.tools import ENVIRONMENT_COLUMN, Toolbox, ToolStop


def sample_episodes(model, tokenizer, rows, config: GRPOConfig, per_prompt: int, toolbox: Toolbox) -> list[dict]:
    """Completions with tool calls, as TRL's loop makes them: the model answers; each call it writes (read back by
    the tokenizer's response template) is run and its result added as a tool turn; the model goes on, for at most
    max_tool_calls rounds and max_completion_length tokens in all, tool results included. With an environment, each
    completion is an episode of its own: reset(**row) first (its text appended to the prompt), its methods as tools.
    Each dict is sample()'s, plus `turns` (the messages after the prompt), `tool_calls`, `tool_failures` and the
    episode's `environment`; `reward_input` is the turns, as TRL hands them to reward functions."""
    import copy

    from trl.chat_template_utils import parse_response

    named = len(toolbox.environments) > 1
    episodes = []
    for index in range(len(rows) * per_prompt):
        row = rows[index // per_prompt]
        functions, environment = toolbox.tools_for(row.get(ENVIRONMENT_COLUMN) if named else None)
        prompt = copy.deepcopy(row["prompt"])
        if environment is not None:
            arguments = {key: value for key, value in row.items() if not (named and key == ENVIRONMENT_COLUMN)}
            try:
                prompt[-1] = with_observation(prompt[-1], environment.reset(**arguments))
            except ToolStop as stop:
                raise UserError(str(stop)) from None
        episodes.append({"prompt": prompt, "functions": functions, "environment": environment, "turns": [],
                         "tokens": 0, "calls": 0, "failures": 0, "ended": False, "done": False})
    was_training = model.training
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        for round_number in range(config.max_tool_calls + 1):
            active = [episode for episode in episodes if not episode["done"]]
            if not active:
                break
            contexts = [tokenizer.apply_chat_template(episode["prompt"] + episode["turns"], tools=episode["functions"],
                                                      add_generation_prompt=True, tokenize=True, return_dict=False)
                        for episode in active]
            budget = max(config.max_completion_length - episode["tokens"] for episode in active)
            width = max(len(ids) for ids in contexts)
            padded = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in contexts],
                                  device=model.device)
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in contexts], device=model.device)
            output = model.generate(input_ids=padded, attention_mask=mask, do_sample=True,
                                    temperature=config.temperature, top_p=config.top_p, top_k=0,
                                    max_new_tokens=budget, pad_token_id=tokenizer.pad_token_id)
            for episode, context, ids in zip(active, contexts, output[:, width:].tolist()):
                ids = ids[:config.max_completion_length - episode["tokens"]]
                episode["ended"] = tokenizer.eos_token_id in ids
                ids = ids[:ids.index(tokenizer.eos_token_id) + 1] if episode["ended"] else ids
                episode["tokens"] += len(ids)
                message = parse_response(tokenizer, ids, prefix=context)
                episode["turns"].append(message)
                calls = message.get("tool_calls") or []
                if not calls or not episode["ended"] or round_number == config.max_tool_calls:
                    episode["done"] = True
                    continue
                results = [run_call(call, episode) for call in calls]
                # The results' tokens, with the turn markers around them, as TRL appends them to the ids so far.
                after = len(tokenizer.apply_chat_template(episode["prompt"] + episode["turns"] + results,
                                                          tools=episode["functions"], add_generation_prompt=True,
                                                          tokenize=True, return_dict=False))
                added = after - len(context) - len(ids)
                if episode["tokens"] + added > config.max_completion_length:
                    episode["done"] = True  # as TRL does: results that would pass the cap are not given, and it ends
                    continue
                episode["turns"] += results
                episode["tokens"] += added
    if was_training:
        model.train()
    return [{"prompt": episode["prompt"], "completion": completion_text(episode["turns"]),
             "completion_tokens": episode["tokens"], "truncated": not episode["ended"], "turns": episode["turns"],
             "tool_calls": episode["calls"], "tool_failures": episode["failures"],
             "environment": episode["environment"], "reward_input": episode["turns"]} for episode in episodes]


def with_observation(message: dict, observation) -> dict:
    """The prompt's last message with what an environment's reset returned appended, as TRL appends it: text to text,
    content parts (a list) after the message's own."""
    if observation is None:
        return message
    content = message["content"]
    if isinstance(content, str) and isinstance(observation, str):
        return {**message, "content": content + observation}
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    added = observation if isinstance(observation, list) else [{"type": "text", "text": str(observation)}]
    return {**message, "content": parts + added}


def run_call(call: dict, episode: dict) -> dict:
    """One tool call of an episode as TRL's loop runs it: the tool's result, or {'error': ...} for a tool that
    raised, an unknown name or arguments the tool does not take; the tool message that carries it back."""
    function = call.get("function", call)
    name, arguments = function.get("name"), function.get("arguments") or {}
    episode["calls"] += 1
    tools = {tool.__name__: tool for tool in episode["functions"]}
    try:
        if name not in tools:
            raise ValueError(f"Tool {name} not found.")
        result = tools[name](**arguments)
        if inspect.iscoroutine(result):  # an async tool, which TRL runs on its event loop
            result = asyncio.run(result)
    except ToolStop as stop:
        raise UserError(str(stop)) from None
    except Exception as error:  # noqa: BLE001 - what the tool raised is the call's result, as in TRL's loop
        episode["failures"] += 1
        result = {"error": str(error)}
    return {"role": "tool", "name": name, "content": result if isinstance(result, list) else str(result)}


def encode_prompts(tokenizer, prompts: list):
    if isinstance(prompts[0], list):
        # Rendered to text first: apply_chat_template pads on the tokenizer's side, and generation needs the left.
        texts = [tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
                 for prompt in prompts]
        return tokenizer(texts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    return tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")


def sample(model, tokenizer, rows, config: GRPOConfig, per_prompt: int = 1, view: BaseView | None = None,
           toolbox: Toolbox | None = None) -> list[dict]:
    """`per_prompt` completions for each row's prompt, sampled as TRL samples (temperature, top_p, length cap) from a
    fixed seed. One dict per completion, grouped by prompt; `reward_input` is the completion in the shape TRL hands
    reward functions (text, or a one-message list for chat prompts). With a base `view`, each also has how it looks
    to the starting model (`base_nll`, `base_drift`: grpo_tool/base_view.py). With tools (`toolbox`), each is an
    episode: see sample_episodes."""
    prompts = list(rows["prompt"])
    if not prompts:
        return []
    if toolbox is not None and toolbox.active:
        return sample_episodes(model, tokenizer, rows, config, per_prompt, toolbox)
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


def probe_sampler(config: GRPOConfig, evaluation, components: list[Component], view: BaseView | None = None,
                  toolbox: Toolbox | None = None):
    """The generation logger's sampling: one scored completion for each of the first max_generation_samples
    evaluation prompts, the same prompts and seed at every evaluation, with the base-model measure per answer (or,
    with tools, the episode's turns)."""
    rows = evaluation.select(range(min(config.max_generation_samples, len(evaluation))))
    columns = {name: list(rows[name]) for name in rows.column_names if name != "prompt"}

    def sample_and_score(model, tokenizer) -> list[dict]:
        samples = sample(model, tokenizer, rows, config, view=view, toolbox=toolbox)
        completions = [entry.pop("reward_input") for entry in samples]
        episode = {"environments": [entry.pop("environment") for entry in samples]} if toolbox and \
            toolbox.environments else {}
        scores = score_completions(components, completions, prompts=[entry["prompt"] for entry in samples],
                                   **columns, **episode)
        for index, (entry, score) in enumerate(zip(samples, scores)):
            entry["rewards"] = {name: None if value is None else round(value, 4) for name, value in score.items()}
            entry["columns"] = {name: values[index] for name, values in columns.items()}  # what the rewards saw
        return samples

    return sample_and_score
