"""The run record and what is read from it: run_record.json, written once before the first step with the effective
config and reward config beside it, holds what later readers must not re-derive (the reward components with their
weights, the backend, the model and the data); the model card of final_model/ and the closing summary of a training
run are built from it.

    record = read_run_record("grpo_outputs")    # the quick test's run: the balanced rewards
    assert record["components"] == {"accuracy": 0.4, "length": 0.2, "quality": 0.4}    # component -> weight
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grpo_tool import metrics
from grpo_tool.alarms import alarm_records
from grpo_tool.checkpoints import complete_checkpoints
from grpo_tool.json_files import write_json_atomic
from grpo_tool.outputs import (
    ALARMS_FILE,
    CONFIG_FILE,
    LOG_FILE,
    MERGED_DIR,
    REWARD_CONFIG_FILE,
    RUN_RECORD_FILE,
    read_json,
)


def write_run_record(output_dir: str | Path, config_dict: dict, reward_config: dict, record: dict[str, Any]) -> Path:
    """The effective config, the effective reward config and the run record, each written atomically."""
    directory = Path(output_dir)
    write_json_atomic(directory / CONFIG_FILE, config_dict)
    write_json_atomic(directory / REWARD_CONFIG_FILE, reward_config)
    path = directory / RUN_RECORD_FILE
    write_json_atomic(path, record)
    return path


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


def run_summary(config, state, final: Path, report: Path | None, record: dict) -> dict:
    """What a training run produced and where it went, for the closing lines: steps, model, checkpoints, logs, the
    report, the alarms raised (judged with the run's record: its components' weights, its zero_variance_groups) and
    the evaluation reward's first and last values."""
    directory = Path(config.output_dir)
    summary = {
        "steps": state.global_step,
        "model": str(final),
        "checkpoints": [str(path) for path in complete_checkpoints(directory)],
        "generation_logs": str(Path(config.effective_generation_log_dir)) if config.enable_generation_logging else None,
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
