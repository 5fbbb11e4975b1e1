"""The console is for a person: a compact line per log, library noise kept off, the error as the last line; the log
file keeps everything, from before it existed to the error that ended the run."""

import logging
import re

from conftest import run_main
from grpo_tool.console import compact_line, for_a_person

LOGS = {"loss": 0.01, "reward": 0.2109, "reward_std": 0.0331, "rewards/accuracy/mean": 0.4943,
        "rewards/length/mean": 0.0671, "completions/mean_length": 31.79, "completions/clipped_ratio": 0.9875,
        "frac_reward_zero_std": 0.0, "step_time": 0.0501, "kl": 0.00123, "grad_norm": 0.35, "entropy": 5.8}


def test_a_log_is_one_compact_line():
    assert compact_line(LOGS, 60, 60, ["accuracy", "length"]) == (
        "step 60/60  reward 0.211 (sd 0.033 over the batch)  (accuracy 0.494, length 0.067)  "
        "length 32 tok, 99% at the cap  flat groups 0%  kl 0.0012  0.05 s/step")
    evaluation = {f"eval_{key}": value for key, value in LOGS.items() if key != "step_time"}
    assert compact_line(evaluation, 20, 60, ["accuracy"]).startswith(
        "eval at step 20/60  reward 0.211 (sd 0.033 over the batch)  (accuracy 0.494)")
    evaluation.update(eval_base_nll=2.345, eval_base_drift=0.4)
    assert compact_line(evaluation, 20, 60, ["accuracy"]).endswith("base model's loss 2.35/token, drift 0.40")
    assert compact_line({"train_runtime": 4.0, "train_loss": 0.1}, 60, 60, []) is None


def test_the_line_says_what_zero_variance_groups_did():
    dropped = {**LOGS, "frac_reward_zero_std": 0.5, "groups/flat": 0.75, "groups/dropped": 1.5}
    assert "flat groups 75% (dropped 1.5 a step)  kl" in compact_line(dropped, 60, 60, [])
    resampled = {**dropped, "groups/dropped": 0.0, "groups/resampled": 3.0, "groups/extra_completions": 32.0,
                 "groups/swapped": 1.0}
    assert "flat groups 75% (resampled 3, rested 1, +32 completions a step)" in compact_line(resampled, 60, 60, [])


def test_noise_a_user_cannot_act_on_stays_off_the_console():
    def record(name, message):
        return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)

    assert not for_a_person(record("transformers.trainer", "There were missing keys in the checkpoint model "
                                                           "loaded: ['lm_head.weight']."))
    assert not for_a_person(record("grpo.metrics", "step 10: loss=0.1"))
    assert for_a_person(record("grpo_tool.callbacks", "alarm (step 30): ..."))


REWARD = "def infinite(completions, **kwargs):\n    return [float('inf')] * len(completions)\n"


def test_the_console_and_the_log_file_of_a_failed_run(tmp_path):
    (tmp_path / "rewards.py").write_text(REWARD)
    output_dir = tmp_path / "out"
    result = run_main("--quick-test", "--max-steps", "2", "--reward-fn", f"{tmp_path / 'rewards.py'}:infinite",
                      "--output-dir", str(output_dir))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("error: reward component 'infinite' returned inf")
    assert "{'loss'" not in result.stderr and "Loading weights" not in result.stderr
    log = (output_dir / "grpo_training.log").read_text(encoding="utf-8")
    # What was logged before the file existed (backend, model) is in it, and so is the error.
    assert "backend: transformers" in log and "model: " in log
    assert f"ERROR grpo.error: {lines[-1]}" in log
    assert not (output_dir / "README.md").exists() and not (output_dir / ".staging").exists()


def test_a_run_prints_compact_lines_and_repeats_alarms_in_the_summary(tmp_path):
    result = run_main("--quick-test", "--max-steps", "20", "--logging-steps", "5", "--eval-steps", "20",
                      "--save-steps", "20", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 20/20  reward " in result.stderr and "(accuracy " in result.stderr
    assert "{'loss'" not in result.stderr and "'eval_loss'" not in result.stderr
    # Each alarm on a line of its own (tqdm clears the bar first), and again in the closing summary.
    alarms = [line for line in result.stderr.splitlines() if re.search(r"alarm \w+ \(step", line)]
    assert alarms and all(line.split("alarm ")[0].strip() in ("", "\x1b[A") for line in alarms)
    assert [line for line in result.stdout.splitlines() if line.startswith("  alarm:")]
