"""Prompts as the model takes them: in its form (chat messages or plain text) and within its token budget.

TRL never truncates prompts, so a prompt longer than max_seq_length - max_completion_length tokens is dropped here,
or shortened when the config says truncate. This module knows tokenizers and prompts, nothing of training.

    from config import GRPOConfig; from data_loader import load_grpo_dataset
    from grpo_tool.tiny_model import ensure_tiny_model; from transformers import AutoTokenizer
    config = GRPOConfig(model_name="tiny", dataset_name="sample", max_seq_length=296, max_completion_length=256)
    data = fit_to_model(load_grpo_dataset(config), AutoTokenizer.from_pretrained(ensure_tiny_model()), config)
    assert len(data["train"]) == 202    # of the sample's 225 prompts, the 23 over 296 - 256 = 40 tokens are dropped
"""

from __future__ import annotations

import logging

from grpo_tool.errors import UserError
from grpo_tool.messages import message_text, messages_as_text

logger = logging.getLogger(__name__)

PROMPT_TOKENS = "prompt_tokens"  # each prompt's length, kept beside the data until the trainer takes it off


def prompt_token_count(tokenizer, prompt) -> int:
    if isinstance(prompt, list):
        return len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
    return len(tokenizer(prompt)["input_ids"])


def uses_chat(prompt_format: str, tokenizer, model_name: str) -> bool:
    """Whether prompts go to the model as chat messages (through its chat template) or as plain text."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise UserError(f"prompt_format=chat, but the tokenizer of {model_name} has no chat template: use "
                        "prompt_format text or auto")
    return prompt_format == "chat" or (prompt_format == "auto" and has_template)


def takes_system_messages(tokenizer) -> bool:
    """Whether the chat template renders a system message (Gemma 2's refuses one)."""
    try:
        tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                      add_generation_prompt=True, tokenize=False)
        return True
    except Exception:  # noqa: BLE001 - jinja raises the template's own exception, whatever its type
        return False


def with_system_prompt(prompt, system_prompt: str, as_message: bool):
    """The prompt with `system_prompt` first, unless it has a system message of its own. It goes in as a system
    message, or (a template that takes none, a model without one) as the first paragraph of the first user turn."""
    if isinstance(prompt, str):
        return f"{system_prompt}\n\n{prompt}" if not as_message else [
            {"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
    if any(message["role"] == "system" for message in prompt):
        return prompt
    if as_message:
        return [{"role": "system", "content": system_prompt}, *prompt]
    first_user = next(index for index, message in enumerate(prompt) if message["role"] == "user")
    folded = {**prompt[first_user], "content": f"{system_prompt}\n\n{message_text(prompt[first_user])}"}
    return [*prompt[:first_user], folded, *prompt[first_user + 1:]]


def in_form(prompt, chat: bool):
    """A prompt in the form the model takes: text becomes one user message for a chat model, and messages become
    'Role: content' text for a model without a chat template."""
    if chat and isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not chat and isinstance(prompt, list):
        return messages_as_text(prompt)
    return prompt


def truncate_text(prompt: str, tokenizer, budget: int) -> str | None:
    """The end of a text prompt that fits `budget` tokens (instructions such as "TL;DR:" sit at the end)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    keep = budget - prompt_token_count(tokenizer, "")
    while keep > 0:
        shortened = tokenizer.decode(ids[-keep:])
        if prompt_token_count(tokenizer, shortened) <= budget:
            return shortened
        keep -= 1 + (keep // 20)  # decoding and re-encoding can merge or split a few tokens at the cut
    return None


def truncate_messages(messages: list[dict], tokenizer, budget: int) -> list[dict] | None:
    """Drop the oldest turns (system messages stay) until the conversation fits; then cut the start of the last."""
    messages = [dict(message) for message in messages]
    while prompt_token_count(tokenizer, messages) > budget:
        turns = [index for index, message in enumerate(messages) if message["role"] != "system"]
        if len(turns) == 1:
            return cut_start(messages, turns[0], tokenizer, budget)
        del messages[turns[0]]
        if messages[turns[0]]["role"] == "assistant" and len(turns) > 2:
            del messages[turns[0]]  # keep the conversation starting with a user turn
    return messages


def cut_start(messages: list[dict], index: int, tokenizer, budget: int) -> list[dict] | None:
    """The conversation with the start of messages[index] cut until it fits, or None when nothing of it would be
    left. Each try cuts more tokens than the last: decoding a cut and tokenizing it again need not give fewer tokens
    (a character split across tokens comes back as more than one), so cutting by the excess alone could loop."""
    ids = tokenizer(message_text(messages[index]), add_special_tokens=False)["input_ids"]
    cut = prompt_token_count(tokenizer, messages) - budget + 1
    while cut < len(ids):
        messages[index] = {**messages[index], "content": tokenizer.decode(ids[cut:])}
        excess = prompt_token_count(tokenizer, messages) - budget
        if excess <= 0:
            return messages
        cut += excess
    return None


def fit_prompt(prompt, tokenizer, budget: int, truncate: bool):
    """(prompt or None, what happened, its tokens): kept, truncated or dropped."""
    tokens = prompt_token_count(tokenizer, prompt)
    if tokens <= budget:
        return prompt, "kept", tokens
    if not truncate:
        return None, "dropped", tokens
    shortened = (truncate_messages if isinstance(prompt, list) else truncate_text)(prompt, tokenizer, budget)
    if shortened is None:
        return None, "dropped", tokens
    return shortened, "truncated", prompt_token_count(tokenizer, shortened)


def fit_prompts(dataset, tokenizer, budget: int, split: str, chat: bool = False, truncate: bool = False,
                system_prompt: str | None = None, system_as_message: bool = False):
    """Put prompts in the model's form (with the system prompt, when there is one: see with_system_prompt) and within
    `budget` tokens (TRL never truncates prompts), saying how many were truncated or dropped."""
    import datasets

    def fit(row):
        prompt = row["prompt"]
        if system_prompt is not None:
            prompt = with_system_prompt(prompt, system_prompt, system_as_message)
        prompt, outcome, tokens = fit_prompt(in_form(prompt, chat), tokenizer, budget, truncate)
        return {"prompt": prompt, "fit": outcome, PROMPT_TOKENS: tokens}

    fitted = dataset.map(fit)
    if isinstance(dataset, datasets.IterableDataset):
        logger.info("%s: prompts over %d tokens are %s as they stream", split, budget,
                    "truncated" if truncate else "dropped")
        return fitted.filter(lambda row: row["prompt"] is not None).remove_columns(["fit", PROMPT_TOKENS])
    if len(dataset) == 0:
        return dataset
    outcomes = fitted["fit"]
    truncated, dropped = outcomes.count("truncated"), outcomes.count("dropped")
    if truncated or dropped:
        logger.warning("%s: of %d prompts over %d tokens (max_seq_length - max_completion_length), %d truncated and "
                       "%d dropped", split, truncated + dropped, budget, truncated, dropped)
    if dropped == len(dataset):
        raise UserError(f"every {split} prompt is longer than {budget} tokens: raise max_seq_length, lower "
                        "max_completion_length, or set prompt_overflow to truncate")
    if dropped:
        fitted = fitted.select([index for index, outcome in enumerate(outcomes) if outcome != "dropped"])
    return fitted.remove_columns("fit")


def has_own_system_message(prompt) -> bool:
    return isinstance(prompt, list) and any(isinstance(message, dict) and message.get("role") == "system"
                                            for message in prompt)


def system_prompt_reach(train) -> tuple[int, int] | None:
    """(prompts system_prompt goes before, training prompts) for in-memory data; None while it streams."""
    if not hasattr(train, "__len__"):
        return None
    prompts = train["prompt"]
    return sum(not has_own_system_message(prompt) for prompt in prompts), len(prompts)


def fit_to_model(data, tokenizer, config, lengths: dict | None = None, tools: list = ()):
    """Both splits of a DatasetDict in the model's prompt form and within max_seq_length - max_completion_length,
    counting the tokens the descriptions of `tools` (the functions) add to each. `lengths`, when given, receives each
    in-memory split's prompt lengths in tokens, row by row, and the training prompts system_prompt went before, as
    "system_prompt": (that many, of so many)."""
    from grpo_tool.tools import crowded, description_tokens

    described = description_tokens(tokenizer, list(tools))
    budget = config.max_seq_length - config.max_completion_length - described
    if described:
        logger.info("tools: their descriptions add %d tokens to every prompt, counted in max_seq_length - "
                    "max_completion_length", described)
        if budget < 1:
            raise UserError(crowded(described, config))
    chat = uses_chat(config.prompt_format, tokenizer, config.model_name)
    as_message = chat and config.system_prompt is not None and takes_system_messages(tokenizer)
    if chat and config.system_prompt is not None and not as_message:
        logger.info("system_prompt: the chat template of %s takes no system message, so it opens the first user "
                    "turn instead", config.model_name)
    if config.system_prompt is not None and (reach := system_prompt_reach(data["train"])) is not None:
        applied, total = reach
        if lengths is not None:
            lengths["system_prompt"] = reach
        if applied == 0 and total:
            logger.warning("system_prompt is unused: all %d training prompts have a system message of their own, "
                           "which each keeps", total)
        elif applied < total:
            logger.info("system_prompt: before %d of %d training prompts; the other %d keep the system message of "
                        "their own", applied, total, total - applied)
    for split in ("train", "eval"):
        data[split] = fit_prompts(data[split], tokenizer, budget, split, chat, config.prompt_overflow == "truncate",
                                  config.system_prompt, as_message)
        if PROMPT_TOKENS in (data[split].column_names or ()):
            if lengths is not None:
                lengths[split] = [tokens + described for tokens in data[split][PROMPT_TOKENS]]
            data[split] = data[split].remove_columns(PROMPT_TOKENS)
    return data
