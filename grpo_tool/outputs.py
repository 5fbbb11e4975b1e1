"""The output directory's names: every file and folder a run writes, and the naming of the generation logs, defined
here and read from here (the report, the model card, the generation logger, `--eval-only` and `--report` included),
with a reader that a half-finished run does not trip. What goes into those files belongs to their writers:
grpo_tool/checkpoints.py (checkpoints and the final model), grpo_tool/run_record.py (the run record, the model card,
the closing summary), grpo_tool/console.py (the log file).

    steps = logged_steps(Path("grpo_outputs") / GENERATION_LOG_DIR)    # the quick test's run: a log per logged step
    assert steps and read_json(Path("grpo_outputs") / GENERATION_LOG_DIR / generation_log_name(steps[-1]))
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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
COMPARISON_FILE = "comparison.json"  # in evaluation/: --eval-checkpoints' table
REPORT_FILE = "report.html"
REWARD_CHECK_FILE = "reward_check.json"
PLAN_FILE = "plan.json"
ALARMS_FILE = "alarms.json"  # every alarm raised: id, step, message
TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
STEP_RECORDS_FILE = "step_records.json"  # in a checkpoint: each step's figures so far, for the alarms of a resumed run
GROUPS_STATE_FILE = "groups_state.json"  # in a checkpoint: the curriculum and the fresh-prompt order (group_choice)
GENERATION_LOG_PATTERN = re.compile(r"generation_log_step_(\d+)\.json$")


def generation_log_name(step: int) -> str:
    return f"generation_log_step_{step}.json"


def logged_steps(log_dir: str | Path) -> list[int]:
    """The global steps that already have a generation log in `log_dir`, in order."""
    directory = Path(log_dir)
    if not directory.is_dir():
        return []
    return sorted(int(match.group(1)) for path in directory.iterdir()
                  if (match := GENERATION_LOG_PATTERN.match(path.name)))


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content, or `default` when it is missing or unreadable (readers of a half-finished run)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
