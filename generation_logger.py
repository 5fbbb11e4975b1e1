"""Generation logs: at each evaluation, what the model answers to a fixed set of evaluation prompts.

`GenerationLoggingCallback` writes `{log_dir}/generation_log_step_{n}.json` (n: the global training step), a JSON
array with one object per prompt. The same prompts are sampled with the same seed at every evaluation, so a reader can
follow one prompt's answer as training goes on. It only observes and writes: the sampling and scoring are handed in as
`sample_fn(model, processing_class) -> list[dict]` by the trainer that owns them.

    from transformers import TrainerState
    sample_fn = lambda model, processing_class: [{"prompt": "Hi", "completion": "Hello"}]    # the trainer's sampling
    GenerationLoggingCallback(sample_fn, "logs").on_evaluate(None, TrainerState(global_step=10), None)    # at step 10
    assert json.loads(Path("logs/generation_log_step_10.json").read_text())[0]["generated"] == "Hello"
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from grpo_tool import metrics
from grpo_tool.json_files import write_json_atomic
from grpo_tool.messages import transcript
from grpo_tool.outputs import generation_log_name, logged_steps

logger = logging.getLogger(__name__)

PREVIEW_CHARACTERS = 80


def preview(text: str, limit: int = PREVIEW_CHARACTERS) -> str:
    """The start of a completion, cut at a word boundary where one is near, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:") + "..."


def prompt_text(prompt) -> str:
    """A prompt as one readable string: plain text as is, chat messages as `role: content` lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{message.get('role', '?')}: {message.get('content', '')}" for message in prompt)


def log_entries(samples: list[dict], eval_step: int, global_step: int) -> list[dict]:
    """The file's rows: the original's keys first, then what we add.

    Each sample dict holds `prompt`, `completion` (text), and optionally `completion_tokens`, `truncated`,
    `rewards` (component name -> value), `base_nll` and `base_drift` (how the answer looks to the starting model,
    nats per token: grpo_tool/base_view.py), and `columns`: the row's other columns as the rewards received them (a
    reference answer, say), with values JSON cannot hold written as text. With tools, `turns` (the episode's
    messages: the model's turns with their tool calls, and the tools' results), `tool_calls` and `tool_failures`;
    full_response is then the transcript (grpo_tool.messages.transcript).
    """
    entries = []
    for index, sample in enumerate(samples):
        entry = {
            "eval_step": eval_step,
            "sample_index": index,
            "prompt": prompt_text(sample["prompt"]),
            "generated": preview(sample["completion"]),
            "full_response": transcript(sample["turns"]) if "turns" in sample else sample["completion"],
            "global_step": global_step,
        }
        entry.update({key: sample[key] for key in ("completion_tokens", "truncated", "rewards", metrics.BASE_NLL,
                                                   metrics.BASE_DRIFT, "tool_calls", "tool_failures") if key in sample})
        if "turns" in sample:
            entry["turns"] = json.loads(json.dumps(sample["turns"], ensure_ascii=False, default=str))
        if "columns" in sample:
            entry["columns"] = json.loads(json.dumps(sample["columns"], ensure_ascii=False, default=str))
        entries.append(entry)
    return entries


class GenerationLoggingCallback(TrainerCallback):
    """Writes a generation log after each evaluation. Every process samples (so sharded models stay in step); only
    the main process writes."""

    def __init__(self, sample_fn: Callable, log_dir: str | Path):
        self.sample_fn = sample_fn
        self.log_dir = Path(log_dir)

    def on_evaluate(self, args, state, control, model=None, processing_class=None, **kwargs):
        samples = self.sample_fn(model, processing_class)
        if not state.is_world_process_zero or not samples:
            return
        step = state.global_step
        # Counting the logs of earlier steps keeps eval_step right after a resume.
        eval_step = 1 + sum(1 for logged in logged_steps(self.log_dir) if logged < step)
        path = self.log_dir / generation_log_name(step)
        write_json_atomic(path, log_entries(samples, eval_step, step))
        logger.info("generation log (evaluation %d, step %d): %s", eval_step, step, path)
