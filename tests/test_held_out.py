"""What a run says beyond its training reward: the base-model measure at each evaluation (metrics, generation logs,
report), held-out --eval-reward-fn scores that can pick the best checkpoint, and alarms.json."""

from __future__ import annotations

import json

from conftest import run_main

HELD_OUT = '''
def fewer_e(completions, **kwargs):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 / (1 + text.count("e")) for text in texts]
'''


def test_held_out_scores_base_measure_and_alarms_of_a_run(tmp_path):
    (tmp_path / "heldout.py").write_text(HELD_OUT)
    out = tmp_path / "out"
    result = run_main("--quick-test", "--max-steps", "30", "--eval-steps", "10", "--save-steps", "10",
                      "--save-total-limit", "2", "--eval-reward-fn", f"{tmp_path / 'heldout.py'}:fewer_e",
                      "--metric-for-best-model", "fewer_e", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "final_model" / "trainer_state.json").read_text())
    history = state["log_history"]
    evaluations = [entry for entry in history if "eval_reward" in entry]
    train = [entry for entry in history if "reward" in entry and "eval_reward" not in entry]
    assert len(evaluations) == 3
    # The held-out score: at every evaluation, never a training score (weight 0, no value while training).
    assert all(0 < entry["eval_rewards/fewer_e/mean"] <= 1 for entry in evaluations)
    assert train and all(entry.get("rewards/fewer_e/mean") is None for entry in train)
    assert all(abs(entry["reward"] - entry["rewards/total_reward/mean"]) < 1e-6 for entry in train)
    # The best checkpoint by it is named and kept past save_total_limit=2, beside the newest.
    best_step = max(evaluations, key=lambda entry: entry["eval_rewards/fewer_e/mean"])["step"]
    assert state["best_model_checkpoint"] == str(out / f"checkpoint-{best_step}")
    assert (out / f"checkpoint-{best_step}").is_dir() and (out / "checkpoint-30").is_dir()
    # The base-model measure (a frozen copy of the tiny model's starting weights: full fine-tuning, beta 0).
    assert all(entry["eval_base_nll"] > 0 for entry in evaluations)
    assert evaluations[-1]["eval_base_drift"] > 0.01
    log = json.loads((out / "generation_logs" / "generation_log_step_30.json").read_text())
    assert log and all(entry["base_nll"] > 0 and "base_drift" in entry for entry in log)
    alarms = json.loads((out / "alarms.json").read_text())
    assert isinstance(alarms, list) and all(set(alarm) == {"id", "step", "message"} for alarm in alarms)
    page = (out / "report.html").read_text()
    assert "How the answers look to the starting model" in page and "Held-out evaluation rewards" in page
    assert "base model&#x27;s loss" in page or "base model's loss" in page


def test_the_base_of_a_lora_run_is_the_model_with_its_adapter_off(tmp_path):
    out = tmp_path / "out"
    result = run_main("--quick-test", "--lora", "--max-steps", "2", "--eval-steps", "2", "--save-steps", "2",
                      "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "final_model" / "trainer_state.json").read_text())["log_history"]
    evaluation = next(entry for entry in history if "eval_reward" in entry)
    # Two steps of LoRA from B = 0 have moved the model a little: a small drift, not none and not a large one (a
    # sampled estimate of a KL divergence this small may fall either side of 0).
    assert 0 < abs(evaluation["eval_base_drift"]) < 0.5 and evaluation["eval_base_nll"] > 1
