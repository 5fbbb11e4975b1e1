"""The output directory: every name in it, the run record, checkpoints, the log file and the model card.

Every file and folder name a run writes is defined here and read from here (the report, the model card, the
generation logger, `--eval-only` and `--report` included). The run record (`run_record.json`) is written once, before
the first step, and holds what later readers must not re-derive: the reward components with their weights, the
backend, the model and the data.

    record = read_run_record("grpo_outputs")    # the quick test's run: the balanced rewards
    assert record["components"] == {"accuracy": 0.4, "length": 0.2, "quality": 0.4}    # component -> weight
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import shutil
from pathlib import Path
from typing import Any

from grpo_tool import metrics
from grpo_tool.alarms import alarm_records
from grpo_tool.errors import UserError
from grpo_tool.json_files import write_json_atomic

LOG_FILE = "grpo_training.log"
CONFIG_FILE = "grpo_config.json"
REWARD_CONFIG_FILE = "reward_config.json"
RUN_RECORD_FILE = "run_record.json"
FINAL_MODEL_DIR = "final_model"
MERGED_DIR = "merged"  # inside final_model/
STAGING_DIR = ".staging"  # checkpoints being written; renamed into the output dir when complete
GENERATION_LOG_DIR = "generation_logs"
EVALUATION_DIR = "evaluation"  # --eval-only's own files
EVAL_METRICS_FILE = "eval_metrics.json"
REPORT_FILE = "report.html"
REWARD_CHECK_FILE = "reward_check.json"
PLAN_FILE = "plan.json"
ALARMS_FILE = "alarms.json"  # every alarm raised: id, step, message
TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
STEP_RECORDS_FILE = "step_records.json"  # in a checkpoint: each step's figures so far, for the alarms of a resumed run
GROUPS_STATE_FILE = "groups_state.json"  # in a checkpoint: the curriculum and the fresh-prompt order (group_choice)
GENERATION_LOG_PATTERN = re.compile(r"generation_log_step_(\d+)\.json$")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def generation_log_name(step: int) -> str:
    return f"generation_log_step_{step}.json"


def logged_steps(log_dir: str | Path) -> list[int]:
    """The global steps that already have a generation log in `log_dir`, in order."""
    directory = Path(log_dir)
    if not directory.is_dir():
        return []
    return sorted(int(match.group(1)) for path in directory.iterdir()
                  if (match := GENERATION_LOG_PATTERN.match(path.name)))


# checkpoints

def checkpoint_step(path: Path) -> int | None:
    suffix = path.name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def checkpoint_is_complete(path: Path) -> bool:
    """Transformers writes trainer_state.json last: a checkpoint whose state parses was written in full."""
    try:
        json.loads((path / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """The checkpoint-N directories of a run that were written in full, oldest first."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    found = [path for path in directory.glob(CHECKPOINT_PREFIX + "*")
             if checkpoint_step(path) is not None and checkpoint_is_complete(path)]
    return sorted(found, key=checkpoint_step)


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """The checkpoint to resume from: the one given (which must be complete), or with 'latest' the newest complete."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = complete_checkpoints(output_dir)
        if not checkpoints:
            raise UserError(f"--resume-from-checkpoint latest: no complete checkpoint-N directory in {output_dir}")
        return str(checkpoints[-1])
    path = Path(resume_from_checkpoint)
    if checkpoint_step(path) is None and not (path / TRAINER_STATE_FILE).exists():
        inside = [p.name for p in complete_checkpoints(path)] or [p.name for p in complete_checkpoints(output_dir)]
        raise UserError(f"{path} is not a checkpoint: a checkpoint is a checkpoint-N directory of a run's output dir, "
                        f"holding trainer_state.json with the weights and optimizer state; "
                        + (f"complete ones: {', '.join(inside)}" if inside else "none found there or in the output "
                           "dir") + " (or give 'latest')")
    if not checkpoint_is_complete(path):
        raise UserError(f"checkpoint {resume_from_checkpoint} is incomplete (no readable trainer_state.json): it was "
                        "cut off while being written; resume from an earlier checkpoint-N or use 'latest'")
    return resume_from_checkpoint


def checkpoint_kind_problem(checkpoint: str, use_lora: bool) -> str | None:
    """A LoRA run's checkpoint resumed without LoRA, or the other way round."""
    adapter = (Path(checkpoint) / "adapter_config.json").is_file()
    if adapter and not use_lora:
        return f"checkpoint {checkpoint} holds a LoRA adapter: the run that wrote it used LoRA, so resume with --lora"
    if use_lora and not adapter:
        return (f"checkpoint {checkpoint} holds full model weights: the run that wrote it trained every weight, so "
                "resume with --no-lora")
    return None


def adapter_problem(checkpoint: str, config) -> str | None:
    """A LoRA checkpoint resumed with another adapter shape (rank, scaling, dropout or the layers it adapts): its
    weights would not fit the fresh adapter, or would be scaled otherwise than they were trained."""
    adapter = read_json(Path(checkpoint) / "adapter_config.json", None)
    if not isinstance(adapter, dict) or not config.use_lora:
        return None
    pairs = [("lora_r", adapter.get("r"), config.lora_r), ("lora_alpha", adapter.get("lora_alpha"), config.lora_alpha),
             ("lora_dropout", adapter.get("lora_dropout"), config.lora_dropout)]
    if config.lora_target_modules != "all-linear" and isinstance(adapter.get("target_modules"), list):
        trained = sorted({str(name).rsplit(".", 1)[-1] for name in adapter["target_modules"]})
        asked = sorted({name.strip() for name in config.lora_target_modules.split(",") if name.strip()})
        pairs.append(("lora_target_modules", ",".join(trained), ",".join(asked)))
    changed = [(name, was, now) for name, was, now in pairs if was is not None and was != now]
    if not changed:
        return None
    return (f"checkpoint {checkpoint} holds an adapter trained with "
            + ", ".join(f"{name}={was}" for name, was, _ in changed) + ", and this run gives "
            + ", ".join(f"{name}={now}" for name, _, now in changed) + ": resume with the adapter's values")


def finished_problem(checkpoint: str, max_steps: int) -> str | None:
    """Why resuming `checkpoint` would do nothing: it is at the run's last step (max_steps, or the step count the
    checkpoint's own run planned when steps come from epochs) and its run saved its final model from there. Without
    that final model (a run stopped during its last evaluation or final save), the resume is what finishes the run:
    no step is trained, and the final model is written."""
    step = saved_step(checkpoint) or 0
    final = Path(checkpoint).parent / FINAL_MODEL_DIR
    if at_last_step(checkpoint, max_steps) and (saved_step(final) or 0) >= step:
        return (f"checkpoint {checkpoint} is at step {step}, where this run ends, and its run is finished ({final} "
                "holds the model): raise --max-steps to train further, or evaluate it with --eval-only")
    return None


def at_last_step(checkpoint: str, max_steps: int) -> bool:
    """Whether `checkpoint` is at the step its run ends: max_steps, or, when steps come from epochs, the step count
    its own run planned."""
    state = read_json(Path(checkpoint) / TRAINER_STATE_FILE, {})
    planned = max_steps if max_steps > 0 else state.get("max_steps", 0)
    return bool(planned) and state.get("global_step", 0) >= planned


# TRL's arguments a checkpoint carries on: its optimizer and schedule hold the first ones (8-bit AdamW's state is not
# torch AdamW's; the schedule's state keeps its learning rate), its place in the data depends on the others. A resume
# that changed one would not use the new value, so it is refused rather than recorded as if it had been used.
FIXED_BY_CHECKPOINT = ("learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "weight_decay",
                       "adam_beta1", "adam_beta2", "adam_epsilon", "optim", "optim_args", "per_device_train_batch_size",
                       "gradient_accumulation_steps", "num_generations", "seed")


def changed_settings_problem(checkpoint: str, arguments: dict) -> str | None:
    """The settings, fixed by `checkpoint`, that this run's TRL `arguments` change: compared with the arguments its
    run recorded beside it (a checkpoint moved away from its run's record cannot be compared)."""
    from grpo_tool.trl_options import setting_name

    record = read_json(Path(checkpoint).parent / RUN_RECORD_FILE, {})
    before = record.get("trl_arguments") if isinstance(record, dict) else None
    if not isinstance(before, dict):
        return None
    changed = [name for name in FIXED_BY_CHECKPOINT if name in before and before[name] != arguments.get(name)]
    if not changed:
        return None
    was = ", ".join(f"{setting_name(name)}={before[name]}" for name in changed)
    now = ", ".join(f"{setting_name(name)}={arguments.get(name)}" for name in changed)
    return (f"checkpoint {checkpoint} continues a run trained with {was}, and this run gives {now}: a resume carries "
            "on the checkpoint's optimizer, schedule and place in the data, so the new value would not be used; "
            "resume with the run's values, or start a new run (another --output-dir) to change them")


def model_problem(checkpoint: str, model_name: str) -> str | None:
    """A checkpoint of another model than the one configured (another size or architecture), found from the two
    config files before any weights load."""
    from grpo_tool.model_shapes import find_shape

    try:
        saved, configured = find_shape(checkpoint), find_shape(model_name)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None  # a shape that cannot be read here is left to the load
    fields = ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab")
    if all(getattr(saved, name) == getattr(configured, name) for name in fields):
        return None
    record = read_json(Path(checkpoint).parent / RUN_RECORD_FILE, {})
    trained = record.get("model") if isinstance(record, dict) else None
    return (f"checkpoint {checkpoint} holds a model of another shape (hidden size {saved.hidden}, {saved.layers} "
            f"layers, vocabulary {saved.vocab}) than --model {model_name} ({configured.hidden}, {configured.layers}, "
            f"{configured.vocab}): resume with the model it was trained from"
            + (f" (--model {trained})" if trained else ""))


def no_space_message(output_dir: str | Path, writing: str, folder: str | Path | None = None) -> str:
    """What a run that filled its disk says: where, what was being written (and is removed), and how to go on."""
    checkpoints = complete_checkpoints(output_dir)
    advice = (f"the last complete checkpoint is {checkpoints[-1]}: free space, then resume with "
              f"--resume-from-checkpoint {checkpoints[-1]}" if checkpoints else
              "no checkpoint was completed: free space, then run again with --overwrite-output-dir")
    return (f"no space left on {folder or output_dir} while writing {writing} (the half-written copy is removed); "
            f"{advice}")


def saved_step(model_dir: str | Path | None) -> int | None:
    """The step a saved model or checkpoint was written at, from its trainer_state.json."""
    try:
        return json.loads(Path(model_dir or "", TRAINER_STATE_FILE).read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def replace_directory(source: Path, target: Path) -> None:
    """Put a finished folder in place of `target` (an earlier one is set aside first and then removed)."""
    aside = target.with_name(f".{target.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        os.replace(target, aside)
    os.replace(source, target)
    shutil.rmtree(aside, ignore_errors=True)


# the log file

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


# the run record

def write_run_record(output_dir: str | Path, config_dict: dict, reward_config: dict, record: dict[str, Any]) -> Path:
    """The effective config, the effective reward config and the run record, each written atomically."""
    directory = Path(output_dir)
    write_json_atomic(directory / CONFIG_FILE, config_dict)
    write_json_atomic(directory / REWARD_CONFIG_FILE, reward_config)
    path = directory / RUN_RECORD_FILE
    write_json_atomic(path, record)
    return path


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content, or `default` when it is missing or unreadable (readers of a half-finished run)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def read_run_record(output_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(output_dir) / RUN_RECORD_FILE, {})


def model_card(record: dict[str, Any], log_history: list[dict], steps: int) -> str:
    """The model card of final_model/, from the run record and the metric history."""
    config = record.get("config", {})
    weights = ", ".join(f"{name} {weight}" for name, weight in record.get("components", {}).items())
    last_eval = next((entry for entry in reversed(log_history) if metrics.EVAL_REWARD in entry), {})
    last_train = next((entry for entry in reversed(log_history) if metrics.REWARD in entry), {})
    lora = record.get("use_lora")
    lines = [
        f"# GRPO fine-tune of {record.get('model')}",
        "",
        "Trained with GRPO (Group Relative Policy Optimization, Shao et al. 2024, arXiv:2402.03300) through "
        "TRL's GRPOTrainer.",
        "",
        f"- base model: `{record.get('model_path')}`",
        f"- weights saved: {'LoRA adapter' if lora else 'full model'}",
        f"- data: `{record.get('data')}`",
        f"- rewards: {config.get('reward_function_type')} ({record.get('reward_config')}: {weights})",
        f"- optimizer steps: {steps}; group size {config.get('group_size')}; learning rate "
        f"{config.get('learning_rate')}; beta {config.get('beta')}",
    ]
    if last_train:
        lines.append(f"- last training reward: {last_train['reward']:.4f}")
    if last_eval:
        lines.append(f"- last evaluation reward: {last_eval[metrics.EVAL_REWARD]:.4f}")
    lines += ["", "Load it with `AutoModelForCausalLM.from_pretrained(path)`"
              + (" after `peft.AutoPeftModelForCausalLM` for the adapter." if lora else ".")]
    return "\n".join(lines) + "\n"


def saved_model(output_dir: str | Path) -> str | None:
    """The output dir's final model when one was saved (weights or an adapter), else None."""
    final = Path(output_dir) / FINAL_MODEL_DIR
    saved = (final / "config.json").is_file() or (final / "adapter_config.json").is_file()
    return str(final) if saved else None


def model_to_evaluate(output_dir: str | Path, model_name: str) -> tuple[str | None, str]:
    """What --eval-only evaluates when no checkpoint is named: the run's final model, else its newest complete
    checkpoint (a run stopped before its end), else the configured model as it is; with the line that says which."""
    if (final := saved_model(output_dir)) is not None:
        return final, f"eval-only: the run's final model, {final}"
    if checkpoints := complete_checkpoints(output_dir):
        return str(checkpoints[-1]), (f"eval-only: {output_dir} has no final_model/ (the run stopped before its end), "
                                      f"so its newest checkpoint, {checkpoints[-1].name}, is evaluated")
    return None, (f"eval-only: {output_dir} holds no trained model (no final_model/ or checkpoint-N/), so "
                  f"{model_name} is evaluated as it is, untrained")


COMPARISON_FILE = "comparison.json"  # in evaluation/: --eval-checkpoints' table


def models_to_compare(output_dir: str | Path, steps: list[int], model_name: str) -> list[tuple[str, str | None, int]]:
    """--eval-checkpoints: (label, path, step) of the starting model (path None: the configured model), then the
    run's complete checkpoints (all of them when `steps` is empty, else those steps), then with all of them the final
    model when no checkpoint holds its step."""
    checkpoints = {checkpoint_step(path): path for path in complete_checkpoints(output_dir)}
    final = saved_model(output_dir)
    if not checkpoints and final is None:
        raise UserError(f"--eval-checkpoints: {output_dir} holds no checkpoint-N/ or final_model/ to compare with "
                        f"{model_name}: give the output dir of a training run")
    if missing := [step for step in steps if step not in checkpoints]:
        raise UserError(f"--eval-checkpoints: no complete checkpoint of step {', '.join(map(str, missing))} in "
                        f"{output_dir} (it has {', '.join(map(str, sorted(checkpoints))) or 'none'})")
    chosen = [(f"{CHECKPOINT_PREFIX}{step}", str(checkpoints[step]), step) for step in sorted(steps or checkpoints)]
    if not steps and final is not None and (step := saved_step(final) or 0) not in checkpoints:
        chosen.append((FINAL_MODEL_DIR, final, step))
    return [("base", None, 0), *chosen]


def run_summary(config, state, final: Path, report: Path | None, record: dict) -> dict:
    """What a training run produced and where it went, for the closing lines: steps, model, checkpoints, logs, the
    report, the alarms raised (judged with the run's record: its components' weights, its zero_variance_groups) and
    the evaluation reward's first and last values."""
    directory = Path(config.output_dir)
    summary = {
        "steps": state.global_step,
        "model": str(final),
        "checkpoints": [str(path) for path in complete_checkpoints(directory)],
        "generation_logs": config.effective_generation_log_dir if config.enable_generation_logging else None,
        "log_file": str(directory / LOG_FILE),
        "config": str(directory / CONFIG_FILE),
        "report": str(report),
    }
    if config.save_merged and config.use_lora:
        merged = Path(final) / MERGED_DIR
        summary["merged"] = str(merged) if merged.is_dir() else f"not written: see {summary['log_file']}"
    recorded = read_json(directory / ALARMS_FILE, [])
    summary["alarms"] = [f"{alarm['id']} (step {alarm['step']}): {alarm['message']}"
                         for alarm in alarm_records(state.log_history, recorded, weights=record["components"],
                                                     max_completion_length=config.max_completion_length,
                                                     zero_variance_groups=record.get("zero_variance_groups"))]
    evaluations = [entry[metrics.EVAL_REWARD] for entry in state.log_history if metrics.EVAL_REWARD in entry]
    if evaluations:
        summary[metrics.EVAL_REWARD] = {"first": evaluations[0], "last": evaluations[-1],
                                        "evaluations": len(evaluations)}
    return summary

