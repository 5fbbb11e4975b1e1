"""Each alarm on a literal metric history: raised when the run is in trouble, silent when it is not."""

import math

from grpo_tool.alarms import find_alarms


def train(step, **metrics):
    return {"step": step, "reward": metrics.pop("reward", 0.5), **metrics}


def evaluation(step, reward):
    return {"step": step, "eval_reward": reward}


def test_a_healthy_history_raises_nothing():
    history = [train(s, reward=0.1 * s, reward_std=0.2, frac_reward_zero_std=0.1, **{"completions/clipped_ratio": 0.1,
               "rewards/accuracy/mean": 0.5, "rewards/length/mean": 0.5}) for s in range(1, 8)]
    history += [evaluation(2, 0.2), evaluation(4, 0.3), evaluation(6, 0.4)]
    assert find_alarms(history, {"accuracy": 0.5, "length": 0.5}, 256) == {}


def test_length_cap():
    history = [train(s, **{"completions/clipped_ratio": 0.95}) for s in range(1, 4)]
    assert "95% of recent completions hit max_completion_length=64" in find_alarms(history, {}, 64)["length_cap"]


def test_training_reward_up_while_eval_reward_down():
    history = [train(1, reward=0.1), evaluation(1, 0.5), train(2, reward=0.3), evaluation(2, 0.4),
               train(3, reward=0.6), evaluation(3, 0.3), train(4, reward=0.8)]
    text = find_alarms(history)["train_up_eval_down"]
    assert "training reward rose" in text and "evaluation reward fell" in text
    recovering = history[:-2] + [evaluation(3, 0.45), train(4, reward=0.8)]
    assert "train_up_eval_down" not in find_alarms(recovering)


def test_one_component_dominating():
    history = [train(s, **{"rewards/reward_model/mean": 4.0, "rewards/accuracy/mean": 0.1}) for s in (1, 2, 3)]
    text = find_alarms(history, {"reward_model": 1.0, "accuracy": 0.4})["dominant_component"]
    assert text.startswith("reward_model makes up 99%")
    balanced = {"reward_model": 0.01, "accuracy": 1.0}
    assert "dominant_component" not in find_alarms(history, balanced)


def test_no_learning_signal_for_many_steps():
    flat = [train(s, reward_std=0.0, frac_reward_zero_std=1.0) for s in range(1, 6)]
    assert "nothing is being learned" in find_alarms(flat)["no_learning_signal"]
    assert "no_learning_signal" not in find_alarms(flat[:4] + [train(5, reward_std=0.3, frac_reward_zero_std=0.2)])


def test_no_learning_signal_says_what_zero_variance_groups_did():
    def logs(**values):
        return [train(s, reward_std=0.0, frac_reward_zero_std=1.0, **{f"groups/{k}": v for k, v in values.items()})
                for s in range(1, 6)]

    assert "set zero_variance_groups to drop" in find_alarms(logs())["no_learning_signal"]
    assert "zero_variance_groups=drop left those groups out" in find_alarms(logs(flat=1.0, dropped=2.0))[
        "no_learning_signal"]
    short = find_alarms(logs(flat=1.0, dropped=2.0, resampled=0.0, extra_completions=16.0))["no_learning_signal"]
    assert "16 extra completions a step and still dropped 2.0 flat groups" in short
    filled = [{**entry, "reward_std": 0.3, "frac_reward_zero_std": 0.5, "groups/dropped": 0.0, "groups/resampled": 2.0}
              for entry in logs(flat=1.0, extra_completions=8.0)]
    assert "no_learning_signal" not in find_alarms(filled)  # resampling found the signal: the steps trained on it


def test_no_learning_signal_judges_the_setting_a_resumed_run_has():
    # Resumed at step 6 with zero_variance_groups changed from resample to drop: the alarm speaks of drop, and only
    # once drop's own logs make a window; resample's logs before the resume do not count towards it.
    def flat(step, **groups):
        return train(step, reward_std=0.0, frac_reward_zero_std=1.0, **{"groups/flat": 1.0, "groups/dropped": 2.0},
                     **{f"groups/{k}": v for k, v in groups.items()})

    resampled = [flat(s, resampled=0.0, extra_completions=16.0) for s in range(1, 6)]
    assert "raise resample_rounds" in find_alarms(resampled, zero_variance_groups="resample")["no_learning_signal"]
    dropped = [flat(s) for s in range(6, 11)]
    assert "no_learning_signal" not in find_alarms(resampled + dropped[:4], zero_variance_groups="drop")
    said = find_alarms(resampled + dropped, zero_variance_groups="drop")["no_learning_signal"]
    assert "zero_variance_groups=drop left those groups out" in said and "resample_rounds" not in said
    # Without the setting (a report of an old run), the last log's own says which.
    assert "zero_variance_groups=drop" in find_alarms(resampled + dropped)["no_learning_signal"]


def test_nan_loss():
    history = [train(1, loss=0.1), train(2, loss=math.nan)]
    assert "NaN at step 2" in find_alarms(history)["nan_loss"]


def test_one_weighted_component_is_the_design_not_an_alarm():
    history = [train(s, **{"rewards/brevity/mean": 0.9, "rewards/accuracy/mean": 0.1}) for s in (1, 2, 3)]
    assert "dominant_component" not in find_alarms(history, {"brevity": 1.0, "accuracy": 0.0})
    assert "dominant_component" in find_alarms(history, {"brevity": 1.0, "accuracy": 0.01})


def run_history(rewards, lengths, base_nll, base_drift, eval_every=2):
    """Training logs with reward and mean length, and an evaluation with the base-model measure every few logs."""
    history = []
    for index, (reward, length) in enumerate(zip(rewards, lengths), start=1):
        history.append(train(5 * index, reward=reward, **{"completions/mean_length": length}))
        if index % eval_every == 0:
            at = index // eval_every - 1
            history.append({"step": 5 * index, "eval_reward": reward, "eval_base_nll": base_nll[at],
                            "eval_base_drift": base_drift[at]})
    return history


def test_reward_hacking_is_raised_when_reward_rises_as_answers_leave_the_base_model():
    # Shaped on SmolLM2-135M trained on short plain words (bench/reward_hacking.py): nonsense answers, reward up.
    history = run_history([0.43, 0.5, 0.62, 0.75, 0.86, 0.9, 0.91, 0.91], [35, 33, 28, 22, 18, 16, 15, 15],
                          base_nll=[2.1, 3.4, 4.6, 5.2], base_drift=[0.4, 1.5, 2.6, 3.1])
    text = find_alarms(history, generation_log_dir="out/generation_logs")["reward_hacking"]
    assert "0.43 -> 0.91" in text and "drifted 3.10 nats per token" in text and "2.10 -> 5.20" in text
    assert "shrank from 35 to 15 tokens" in text and "out/generation_logs" in text


def test_no_reward_hacking_alarm_for_fluent_gains_flat_rewards_or_the_tiny_quick_test():
    healthy = run_history([0.3, 0.35, 0.42, 0.5, 0.55, 0.6], [30, 34, 38, 41, 44, 46],
                          base_nll=[1.9, 2.0, 2.1], base_drift=[0.2, 0.35, 0.5])
    assert "reward_hacking" not in find_alarms(healthy)
    drifting_without_gain = run_history([0.5, 0.5, 0.51, 0.5], [30, 20, 14, 12], base_nll=[2.0, 4.0],
                                        base_drift=[1.5, 3.0])
    assert "reward_hacking" not in find_alarms(drifting_without_gain)
    # The tiny quick test: a random model, so the base model's loss is ln(vocabulary) throughout.
    tiny = run_history([0.046, 0.046, 0.097, 0.152, 0.204, 0.215], [31.1, 32, 31.9, 31.7, 31.7, 31.8],
                       base_nll=[6.25, 6.26, 6.25], base_drift=[0.12, 0.36, 0.48])
    assert find_alarms(tiny, {"accuracy": 0.4, "length": 0.2, "quality": 0.4}, 32) == {}


def test_a_length_collapse_is_enough_without_the_base_measure():
    history = [train(5 * i, reward=r, **{"completions/mean_length": n})
               for i, (r, n) in enumerate(zip([0.2, 0.4, 0.6, 0.8, 0.9], [40, 30, 20, 12, 10]), start=1)]
    assert "shrank from 40 to 14 tokens" in find_alarms(history)["reward_hacking"]


def test_alarm_records_keep_the_step_an_alarm_was_first_raised_at():
    from grpo_tool.alarms import alarm_records

    history = [train(s, **{"completions/clipped_ratio": 0.95}) for s in (10, 20, 30, 40)]
    recorded = [{"id": "length_cap", "step": 30, "message": "cut off"}]
    assert alarm_records(history, recorded, max_completion_length=64) == recorded
    assert alarm_records(history, [], max_completion_length=64)[0]["step"] == 40


def test_a_component_that_scored_no_completion_of_a_batch():
    history = [train(1, **{"rewards/brevity/all_missing": 0.0, "rewards/never/all_missing": 0.0}),
               train(2, **{"rewards/brevity/all_missing": 0.0, "rewards/never/all_missing": 0.25})]
    text = find_alarms(history)["unscored_batches"]
    assert "never in 25% of the batches logged at step 2" in text and "brevity" not in text
    # None for some completions of every batch is TRL's convention for "skip", not an alarm; evaluations are not read.
    scored = [train(1, **{"rewards/brevity/all_missing": 0.0, "rewards/brevity/missing": 0.5}),
              {"step": 1, "eval_reward": 0.5, "eval_rewards/brevity/all_missing": 1.0}]
    assert "unscored_batches" not in find_alarms(scored)


def test_tools_never_called_after_the_first_evaluations():
    def history(calls: float, evaluations: int) -> list[dict]:
        steps = [{"step": step, "reward": 0.1, "tools/call_frequency": calls, "tools/failure_frequency": 0.0}
                 for step in range(1, 6)]
        return steps + [{"step": 5, "eval_reward": 0.1}] * evaluations

    assert "no tool has been called in any of the 5 logged steps" in find_alarms(history(0.0, 2))["tools_unused"]
    assert "tools_unused" not in find_alarms(history(0.0, 1))  # too early to say
    assert "tools_unused" not in find_alarms(history(0.25, 2))
    assert "tools_unused" not in find_alarms([{"step": 1, "reward": 0.1}] * 5 + [{"eval_reward": 0.1}] * 2)  # no tools


def test_most_tool_calls_failing():
    def history(failing: float) -> list[dict]:
        return [{"step": step, "reward": 0.1, "tools/call_frequency": 1.2, "tools/failure_frequency": failing}
                for step in range(1, 4)]

    assert find_alarms(history(0.8))["tool_failures"].startswith("80% of recent tool calls failed")
    assert "tool_failures" not in find_alarms(history(0.5))
