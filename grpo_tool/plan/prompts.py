"""The prompt length a plan counts: the longest training prompt in tokens when the data and the tokenizer are on this
machine, else the most a prompt may be. The caller hands in how to read the training prompts, so that planning
reads data only where that is cheap and local.

    from grpo_tool.settings import GRPOConfig
    tokens, source = longest_prompt(GRPOConfig(model_name="tiny", dataset_name="sample"), lambda: ["Hi there"])
    assert 0 < tokens < 64 and source == "the longest training prompt of 1"
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from grpo_tool.datasets import SAMPLE_DATASET
from grpo_tool.errors import UserError
from grpo_tool.prompt_budget import in_form, prompt_token_count, uses_chat
from grpo_tool.settings import GRPOConfig


def local_tokenizer(config: GRPOConfig):
    """The model's tokenizer when it is on this machine (no download), else None."""
    from grpo_tool.model_registry import TINY_MODEL, TOKENIZER_FILES, find_gguf, resolve_model_name
    from grpo_tool.model_shapes import hub_cache_config

    name = resolve_model_name(config.model_name)
    if name == TINY_MODEL:
        from grpo_tool.tiny_model import ensure_tiny_model

        source = ensure_tiny_model()
    elif find_gguf(name):
        from grpo_tool.gguf_models import cache_dir

        source = cache_dir(find_gguf(name))
    else:
        cached = hub_cache_config(name)
        source = Path(name) if Path(name).is_dir() else cached.parent if cached else None
    if source is None or not any((Path(source) / file).is_file() for file in TOKENIZER_FILES):
        return None
    from grpo_tool.models import load_tokenizer

    return load_tokenizer(str(source), config.trust_remote_code)


def longest_prompt(config: GRPOConfig, training_prompts: Callable[[], list]) -> tuple[int, str]:
    """The longest of training_prompts() in tokens when the data and tokenizer are on this machine; otherwise the
    most a prompt may be (max_seq_length - max_completion_length), which is what a run can meet."""

    budget = config.max_seq_length - config.max_completion_length
    fallback = "max_seq_length - max_completion_length, the most a prompt may be: "
    if config.streaming:
        return budget, fallback + "the data streams"
    if not (config.custom_data or config.dataset_name == SAMPLE_DATASET):
        return budget, fallback + "the hub dataset is not read for a plan"
    tokenizer = local_tokenizer(config)
    if tokenizer is None:
        return budget, fallback + "the tokenizer is not on this machine"
    described = 0
    if config.tools or config.environments:
        from grpo_tool import tools

        tools.prepare_tokenizer(tokenizer, config, config.model_name)
        described = tools.description_tokens(tokenizer, tools.resolve(config).all_tools())
        budget -= described
        if budget < 1:
            raise UserError(tools.crowded(described, config))
    prompts = training_prompts()
    chat = uses_chat(config.prompt_format, tokenizer, config.model_name)
    # The longest by characters are the longest in tokens, give or take: count tokens for those only.
    longest = sorted(prompts, key=lambda prompt: len(str(prompt)), reverse=True)[:200]
    counts = [prompt_token_count(tokenizer, in_form(prompt, chat)) for prompt in longest]
    fitting = [count for count in counts if count <= budget]
    tokens = budget if config.prompt_overflow == "truncate" and len(fitting) < len(counts) else max(fitting or [budget])
    return tokens + described, f"the longest training prompt of {len(prompts)}" + (
        f", with {described} tokens of tool descriptions" if described else "")
