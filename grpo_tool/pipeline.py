"""The command line's runs, each a straight line through the trainer's steps: training, --eval-only.

    from config import build_config
    summary = run_training(build_config(mode="quick_test"))    # into ./grpo_outputs
"""

from __future__ import annotations

import time
from pathlib import Path

import contextlib

from alarms import alarm_records
from config import GRPOConfig, is_main_process
from grpo_tool import outputs
from grpo_tool.run_dir import DirectoryLock, check_output_dir
from grpo_trainer import GRPOTrainer
from report import build_report


def output_dir_lock(config: GRPOConfig):
    """The output dir's lock, held by the main process (the one that writes) while a task runs."""
    if not is_main_process():
        return contextlib.nullcontext()
    return DirectoryLock(config.output_dir, also=(config.generation_log_dir,))


def run_training(config: GRPOConfig) -> dict:
    """Train, save, write the report, and say where everything went."""
    start = time.monotonic()
    check_output_dir(config)  # a used dir is refused before the lock creates anything
    with output_dir_lock(config):
        trainer = GRPOTrainer(config)  # config checked, rewards resolved once
        data = trainer.load_data()  # every data mistake found before a model loads
        trainer.check_arguments()  # so is every TRL option and resume mistake
        trainer.load_model()
        trainer.train(data)  # data fitted to the model, TRL trainer built, run record written, trained
        final = trainer.save_model()
        report = build_report(config.output_dir) if is_main_process() else None
    state = trainer.trainer.state
    directory = Path(config.output_dir)
    summary = {
        "steps": state.global_step,
        "seconds": round(time.monotonic() - start, 1),
        "model": str(final),
        "checkpoints": [str(path) for path in outputs.complete_checkpoints(directory)],
        "generation_logs": config.effective_generation_log_dir if config.enable_generation_logging else None,
        "log_file": str(directory / outputs.LOG_FILE),
        "config": str(directory / outputs.CONFIG_FILE),
        "report": str(report),
    }
    if config.save_merged and config.use_lora:
        merged = Path(final) / outputs.MERGED_DIR
        summary["merged"] = str(merged) if merged.is_dir() else f"not written: see {summary['log_file']}"
    recorded = outputs.read_json(directory / outputs.ALARMS_FILE, [])
    summary["alarms"] = [f"{record['id']} (step {record['step']}): {record['message']}"
                         for record in alarm_records(state.log_history, recorded, weights=trainer.record["components"],
                                                     max_completion_length=config.max_completion_length)]
    evaluations = [entry["eval_reward"] for entry in state.log_history if "eval_reward" in entry]
    if evaluations:
        summary["eval_reward"] = {"first": evaluations[0], "last": evaluations[-1], "evaluations": len(evaluations)}
    return summary


def run_evaluation(config: GRPOConfig) -> dict:
    """Evaluate a checkpoint, the output dir's saved model, or the configured model."""
    checkpoint = outputs.resolve_checkpoint(config.resume_from_checkpoint, config.output_dir)
    final = Path(config.output_dir) / outputs.FINAL_MODEL_DIR
    saved = (final / "config.json").is_file() or (final / "adapter_config.json").is_file()
    with output_dir_lock(config):
        trainer = GRPOTrainer(config)
        data = trainer.load_data()
        trainer.check_arguments(training=False)
        trainer.load_model(checkpoint or (str(final) if saved else None))
        metrics = trainer.evaluate(data)
    metrics["model"] = trainer.model_path
    return metrics
