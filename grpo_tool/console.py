"""The console is for a person, the log file for the record: one compact line per logging step, log lines that
never land on a progress bar, library noise a user cannot act on kept off the screen, and the log file, which takes
every record, those logged before it was opened included.

    line = compact_line({"reward": 0.2, "reward_std": 0.05, "rewards/accuracy/mean": 0.4}, 10, 60, ["accuracy"])
    assert line == "step 10/60  reward 0.200 (sd 0.050 over the batch)  (accuracy 0.400)"
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from grpo_tool import metrics

# Records only for the log file: every metric of every log, and the error that ended a run (printed once already).
FILE_ONLY_LOGGERS = ("grpo.metrics", "grpo.error")
# Library progress bars that say nothing a user can act on (weights loading, dataset splits, shard writing);
# transformers' training bar is separate and stays.
QUIET_PROGRESS_BARS = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the log file's lines


def quiet_library_progress_bars() -> None:
    """Through the environment, read when the libraries are imported; where one already is (a Python caller's
    process), through its own switch. Nothing is imported here."""
    for name, value in QUIET_PROGRESS_BARS.items():
        os.environ.setdefault(name, value)
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


class ConsoleHandler(logging.Handler):
    """Writes through tqdm, so a line printed while a progress bar is drawn starts a line of its own."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm  # tqdm is small; it is here because only the console needs it

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never take the run down
            self.handleError(record)


def for_a_person(record: logging.LogRecord) -> bool:
    """Whether a record belongs on the console."""
    if record.name in FILE_ONLY_LOGGERS:
        return False
    message = record.getMessage()
    # Tied input and output embeddings are saved once; transformers reports the output copy as missing on resume.
    if "missing keys" in message and "['lm_head.weight']" in message:
        return False
    # TRL repeats this at every step with the whole row; the unscored_batches alarm says it once.
    if "All reward functions returned None" in message:
        return False
    return True


class EarlyRecords(logging.handlers.BufferingHandler):
    """Holds what is logged before the log file exists (model loading, data counts), for attach_log_file."""

    def shouldFlush(self, record) -> bool:
        return False


def attach_log_file(path: str | Path) -> Path:
    """Send this tool's log records (metrics included) to `path` as well, starting with those logged before it
    existed; returns the handler's path."""
    path = Path(path)
    root = logging.getLogger()
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in root.handlers):
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        for early in [h for h in root.handlers if isinstance(h, EarlyRecords)]:
            for record in early.buffer:
                handler.handle(record)
            root.removeHandler(early)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return path


def detach_log_files() -> None:
    """Close the file handlers attach_log_file added (a Python caller may start another run in the same process)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, (logging.FileHandler, EarlyRecords))]:
        root.removeHandler(handler)
        handler.close()


def compact_line(logs: dict, step: int, max_steps: int, components: list[str]) -> str | None:
    """One line for one training or evaluation log; None for logs without a reward (the closing runtime dict)."""
    prefix = metrics.EVAL_PREFIX if metrics.EVAL_REWARD in logs else ""
    if logs.get(prefix + metrics.REWARD) is None:
        return None

    def value(key: str):
        return logs.get(prefix + key)

    parts = [f"{'eval at ' if prefix else ''}step {step}/{max_steps}",
             f"reward {value(metrics.REWARD):.3f} (sd {value(metrics.REWARD_STD) or 0:.3f} over the batch)"]
    means = [f"{name} {value(metrics.component_mean(name)):.3f}" for name in components
             if value(metrics.component_mean(name)) is not None]
    if means:
        parts.append("(" + ", ".join(means) + ")")
    if prefix and (held := metrics.held_out_keys(logs)):
        parts.append(", ".join(f"{key.removeprefix(prefix)} {logs[key]:.3f}" for key in held))
    if value(metrics.MEAN_LENGTH) is not None:
        parts.append(f"length {value(metrics.MEAN_LENGTH):.0f} tok, "
                     f"{value(metrics.CLIPPED_RATIO) or 0:.0%} at the cap")
    if value(metrics.FLAT_GROUPS) is not None:
        flat = value(metrics.GROUPS_FLAT) if value(metrics.GROUPS_FLAT) is not None else value(metrics.FLAT_GROUPS)
        parts.append(f"flat groups {flat:.0%}" + group_actions(logs))
    if value(metrics.TOOL_CALLS) is not None:
        parts.append(f"tools {value(metrics.TOOL_CALLS):.2f} calls/completion, "
                     f"{value(metrics.TOOL_FAILURES) or 0:.0%} failed")
    if value(metrics.KL) is not None:
        parts.append(f"kl {value(metrics.KL):.4f}")
    if value(metrics.BASE_NLL) is not None:
        parts.append(f"base model's loss {value(metrics.BASE_NLL):.2f}/token, "
                     f"drift {value(metrics.BASE_DRIFT) or 0:.2f}")
    if logs.get("step_time") is not None:
        parts.append(f"{logs['step_time']:.2f} s/step")
    return "  ".join(parts)


def group_actions(logs: dict) -> str:
    """What zero_variance_groups and the curriculum did, per step on average over the logged steps."""
    said = [f"{word} {logs[name]:.3g}" for word, name in (("dropped", metrics.GROUPS_DROPPED),
                                                          ("resampled", metrics.GROUPS_RESAMPLED),
                                                          ("rested", metrics.GROUPS_SWAPPED))
            if logs.get(name)]
    if logs.get(metrics.EXTRA_COMPLETIONS):
        said.append(f"+{logs[metrics.EXTRA_COMPLETIONS]:.0f} completions")
    return f" ({', '.join(said)} a step)" if said else ""


def format_summary(result: dict, eval_only: bool = False) -> str:
    """What the run produced and where it went, one item a line."""
    if eval_only:
        lines = [f"evaluated {result.get('model')} at step {result.get('global_step')}"]
        held = metrics.held_out_keys(result)
        lines += [f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}"
                  for key, value in result.items() if key.startswith(metrics.EVAL_REWARD) or key in held]
        return "\n".join(lines)
    lines = [f"done: {result['steps']} steps in {result['seconds']} s",
             f"  model:           {result['model']}",
             *([f"  merged model:    {result['merged']}"] if "merged" in result else []),
             f"  checkpoints:     {', '.join(result['checkpoints']) or 'none'}",
             f"  generation logs: {result['generation_logs'] or 'off'}",
             f"  training log:    {result['log_file']}",
             f"  config:          {result['config']}",
             f"  report:          {result['report']}"]
    if metrics.EVAL_REWARD in result:
        rewards = result[metrics.EVAL_REWARD]
        lines.append(f"  eval reward:     {rewards['first']:.4f} -> {rewards['last']:.4f} over "
                     f"{rewards['evaluations']} evaluation{'' if rewards['evaluations'] == 1 else 's'}")
    lines += [f"  settings:        {note}" for note in result.get("settings", [])]
    lines += [f"  alarm:           {text}" for text in result.get("alarms", [])]
    return "\n".join(lines)


def comparison_columns(rows: list[dict]) -> list[str]:
    """The metrics a comparison shows: the reward, the pass@ and maj@ figures, each reward component's and held-out
    score's mean, the mean length; those the evaluations logged."""
    logged = list(dict.fromkeys(key for row in rows for key in row))
    return [metrics.EVAL_REWARD,
            *metrics.held_out_keys(logged),
            *[key for key in logged if key.startswith(metrics.evaluation("rewards/")) and key.endswith("/mean")],
            metrics.evaluation(metrics.MEAN_LENGTH)]


def format_comparison(rows: list[dict], where: str) -> str:
    """--eval-checkpoints' table: one model a line, the starting model first."""
    columns = [column for column in comparison_columns(rows) if any(column in row for row in rows)]
    names = ["model", "step", *["tokens" if column.endswith(metrics.MEAN_LENGTH) else
                                column.removeprefix(metrics.EVAL_PREFIX).removeprefix("rewards/").removesuffix("/mean")
                                for column in columns]]
    cells = [[row["model"], str(row["step"]),
              *[f"{row[column]:.3f}" if isinstance(row.get(column), (int, float)) else "-" for column in columns]]
             for row in rows]
    widths = [max(len(line[i]) for line in [names, *cells]) for i in range(len(names))]
    lines = [f"compared {len(rows)} models on the same held-out prompts ({where}):",
             "  " + "  ".join(name.ljust(width) if i == 0 else name.rjust(width)
                              for i, (name, width) in enumerate(zip(names, widths)))]
    lines += ["  " + "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(line, widths))) for line in cells]
    return "\n".join(lines)
