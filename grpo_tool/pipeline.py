"""The command line's runs, each a straight line through the trainer's steps: training, --eval-only.

    from config import build_config
    summary = run_training(build_config(mode="quick_test"))    # into ./grpo_outputs
"""

from __future__ import annotations

import time
from pathlib import Path

from config import GRPOConfig, is_main_process
from grpo_tool import outputs
from grpo_trainer import GRPOTrainer
from report import build_report


def run_training(config: GRPOConfig) -> dict:
    """Train, save, write the report, and say where everything went."""
    start = time.monotonic()
    trainer = GRPOTrainer(config)  # config checked, rewards resolved once
    trainer.load_model()
    trainer.train()  # data prepared, TRL trainer built, run record written, trained
    final = trainer.save_model()
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
        "report": str(build_report(directory)) if is_main_process() else None,
    }
    evaluations = [entry["eval_reward"] for entry in state.log_history if "eval_reward" in entry]
    if evaluations:
        summary["eval_reward"] = {"first": evaluations[0], "last": evaluations[-1], "evaluations": len(evaluations)}
    return summary


def run_evaluation(config: GRPOConfig) -> dict:
    """Evaluate a checkpoint, the output dir's saved model, or the configured model."""
    checkpoint = outputs.resolve_checkpoint(config.resume_from_checkpoint, config.output_dir)
    final = Path(config.output_dir) / outputs.FINAL_MODEL_DIR
    saved = (final / "config.json").is_file() or (final / "adapter_config.json").is_file()
    trainer = GRPOTrainer(config)
    trainer.load_model(checkpoint or (str(final) if saved else None))
    metrics = trainer.evaluate()
    metrics["model"] = trainer.model_path
    return metrics
