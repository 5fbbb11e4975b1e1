"""A run's saved models: its checkpoint-N folders and its final model. Finding the complete ones, choosing the one to
resume or evaluate, refusing a resume that would not work (another kind of weights, another model or adapter shape,
changed settings the checkpoint fixes, nothing left to train), and putting a finished model folder in place.

    model, said = model_to_evaluate("grpo_outputs", "tiny")    # the quick test's run: its final model
    assert model == str(Path("grpo_outputs") / FINAL_MODEL_DIR) and saved_step(model) >= 1
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from grpo_tool.errors import UserError
from grpo_tool.outputs import (
    CHECKPOINT_PREFIX,
    FINAL_MODEL_DIR,
    RUN_RECORD_FILE,
    TRAINER_STATE_FILE,
    read_json,
)


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
