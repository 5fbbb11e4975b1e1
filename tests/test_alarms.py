"""Each alarm on a literal history of step records: raised when the run is in trouble, silent when it is not. The
real runs that set the thresholds are the zoo's (tests/test_alarm_zoo.py)."""

import math

from grpo_tool.alarms import alarm_records, completion_shapes, find_alarms, looping, step_record


def train(step, **metrics):
    return {"step": step, "reward": metrics.pop("reward", 0.5), **metrics}


def steps(count, start=1, **metrics):
    return [train(step, **metrics) for step in range(start, start + count)]


def evaluation(step, reward, **scores):
    return {"step": step, "eval_reward": reward, **scores}


def test_a_healthy_history_raises_nothing():
    history = [train(s, reward=0.03 * s, reward_std=0.2, frac_reward_zero_std=0.1, entropy=6.2 - 0.01 * s,
                     grad_norm=0.3, **{"completions/clipped_ratio": 0.1, "rewards/accuracy/mean": 0.5,
                                       "rewards/length/mean": 0.5, "completions/identical_groups": 0.0,
                                       "completions/repetitive": 0.0}) for s in range(1, 31)]
    history += [evaluation(10, 0.2), evaluation(20, 0.3), evaluation(30, 0.4)]
    assert find_alarms(history, {"accuracy": 0.5, "length": 0.5}, 256, learning_rate=1e-5, temperature=1.0) == {}


def test_length_cap():
    history = steps(5, **{"completions/clipped_ratio": 0.95})
    said = find_alarms(history, {}, 64)["length_cap"]
    assert "95% of the completions of the last 5 steps hit max_completion_length=64" in said
    assert "length_cap" not in find_alarms(history[:4], {}, 64)  # four steps are not yet "recent"
    loops = steps(5, **{"completions/clipped_ratio": 0.95, "completions/repetitive": 0.9})
    assert "length_cap" not in find_alarms(loops, {}, 64)  # loops run into any cap: the cap is not the cause


def test_a_held_out_score_falling_while_the_training_reward_rises():
    history = [train(s, reward=0.3 + 0.01 * s) for s in range(1, 41)]
    scores = [0.95, 0.9, 0.7, 0.57]  # the --eval-reward-fn score; the training reward rose at evaluations too
    history += [evaluation(10 * i, 0.3 + 0.05 * i, **{"eval_rewards/judge/mean": score})
                for i, score in enumerate(scores, start=1)]
    said = find_alarms(history)["train_up_eval_down"]
    assert "held-out rewards/judge/mean fell from 0.950 at step 10 to 0.570 at step 40" in said
    # Noise around a plateau, a fall at the last evaluation alone, or a training reward that fell too: no alarm.
    for scores in ([0.95, 0.9, 0.93, 0.91], [0.95, 0.94, 0.95, 0.6]):
        evaluations = [evaluation(10 * i, 0.5, **{"eval_rewards/judge/mean": s}) for i, s in enumerate(scores, 1)]
        assert "train_up_eval_down" not in find_alarms(history[:40] + evaluations)
    falling = [train(s, reward=0.7 - 0.01 * s) for s in range(1, 41)]
    assert "train_up_eval_down" not in find_alarms(falling + history[40:])


def test_pass_at_one_and_the_evaluation_reward_are_judged_too():
    history = [train(s, reward=0.1 + 0.01 * s) for s in range(1, 31)]
    history += [evaluation(10, 0.5, **{"eval_pass@1": 0.6}), evaluation(20, 0.4, **{"eval_pass@1": 0.5}),
                evaluation(30, 0.3, **{"eval_pass@1": 0.3})]
    assert "held-out reward fell from 0.500" in find_alarms(history)["train_up_eval_down"]
    history[-3:] = [{**entry, "eval_reward": 0.5} for entry in history[-3:]]
    assert "held-out pass@1 fell from 0.600" in find_alarms(history)["train_up_eval_down"]


def test_one_component_dominating():
    history = steps(5, **{"rewards/reward_model/mean": 4.0, "rewards/accuracy/mean": 0.1})
    text = find_alarms(history, {"reward_model": 1.0, "accuracy": 0.4})["dominant_component"]
    assert text.startswith("reward_model makes up 99%")
    assert "dominant_component" not in find_alarms(history, {"reward_model": 0.01, "accuracy": 1.0})
    one = steps(5, **{"rewards/brevity/mean": 0.9, "rewards/accuracy/mean": 0.1})
    assert "dominant_component" not in find_alarms(one, {"brevity": 1.0, "accuracy": 0.0})  # one weighted: the design


def test_no_learning_signal_when_every_group_is_flat_for_ten_steps():
    flat = steps(10, reward_std=0.0, frac_reward_zero_std=1.0)
    assert "for the last 10 steps every group" in find_alarms(flat)["no_learning_signal"]
    assert "no_learning_signal" not in find_alarms(flat[:9])  # five, or nine, flat steps are a warming-up run's too
    signal = flat[:9] + [train(10, reward_std=0.3, frac_reward_zero_std=0.75)]
    assert "no_learning_signal" not in find_alarms(signal)


def test_no_learning_signal_from_rare_rewards_but_not_from_a_run_warming_up():
    rare = [train(s, reward_std=0.1, frac_reward_zero_std=1.0 if s % 3 else 0.75) for s in range(1, 21)]
    assert "over the last 20 steps 92% of the groups" in find_alarms(rare)["no_learning_signal"]
    assert "no_learning_signal" not in find_alarms(rare[:19])
    # Most groups flat at first, fewer as the model finds the reward: the signal is growing.
    warming = [train(s, reward_std=0.1, frac_reward_zero_std=1.0 if s <= 10 else 0.8) for s in range(1, 21)]
    assert "no_learning_signal" not in find_alarms(warming)
    # Groups of one completion repeated are a sampling matter, said by near_greedy_sampling.
    greedy = steps(20, reward_std=0.0, frac_reward_zero_std=1.0, **{"completions/identical_groups": 1.0})
    assert set(find_alarms(greedy, temperature=0.05)) == {"near_greedy_sampling"}


def test_no_learning_signal_says_what_zero_variance_groups_did():
    def flat(**values):
        return steps(10, reward_std=0.0, frac_reward_zero_std=1.0, **{f"groups/{k}": v for k, v in values.items()})

    assert "set zero_variance_groups to drop" in find_alarms(flat())["no_learning_signal"]
    assert "zero_variance_groups=drop left those groups out" in find_alarms(flat(flat=1.0, dropped=2.0))[
        "no_learning_signal"]
    short = find_alarms(flat(flat=1.0, dropped=2.0, resampled=0.0, extra_completions=16.0))["no_learning_signal"]
    assert "16 extra completions a step and still dropped 2.0 flat groups" in short
    filled = [{**entry, "reward_std": 0.3, "frac_reward_zero_std": 0.5, "groups/dropped": 0.0, "groups/resampled": 2.0}
              for entry in flat(flat=1.0, extra_completions=8.0)]
    assert "no_learning_signal" not in find_alarms(filled)  # resampling found the signal: the steps trained on it


def test_no_learning_signal_judges_the_setting_a_resumed_run_has():
    # Resumed at step 11 with zero_variance_groups changed from resample to drop: the alarm speaks of drop, and only
    # once drop's own steps make a window; resample's steps before the resume do not count towards it.
    def flat(start, count, **groups):
        return steps(count, start, reward_std=0.0, frac_reward_zero_std=1.0,
                     **{"groups/flat": 1.0, "groups/dropped": 2.0}, **{f"groups/{k}": v for k, v in groups.items()})

    resampled = flat(1, 10, resampled=0.0, extra_completions=16.0)
    assert "raise resample_rounds" in find_alarms(resampled, zero_variance_groups="resample")["no_learning_signal"]
    dropped = flat(11, 10)
    assert "no_learning_signal" not in find_alarms(resampled + dropped[:9], zero_variance_groups="drop")
    said = find_alarms(resampled + dropped, zero_variance_groups="drop")["no_learning_signal"]
    assert "zero_variance_groups=drop left those groups out" in said and "resample_rounds" not in said
    # Without the setting (a report of an old run), the last step's own says which.
    assert "zero_variance_groups=drop" in find_alarms(resampled + dropped)["no_learning_signal"]


def test_a_loss_or_gradient_norm_that_is_not_finite():
    assert "the loss became nan at step 2" in find_alarms([train(1, loss=0.1), train(2, loss=math.nan)])["nan_loss"]
    said = find_alarms([train(1, grad_norm=0.5), train(2, grad_norm=math.inf)])["nan_loss"]
    assert "the gradient norm became inf at step 2" in said and "learning rate" in said
    # A step whose rewards were all unscored has no reward, and its NaN loss still counts.
    assert "nan_loss" in find_alarms([{"step": 1, "loss": math.nan}])


def collapsing(count=20, **late):
    """Healthy for five steps, then entropy gone and the completions looping."""
    history = steps(5, entropy=6.2, grad_norm=0.4,
                    **{"completions/repetitive": 0.0, "completions/identical_groups": 0.0})
    return history + steps(count - 5, 6, entropy=0.05, grad_norm=0.5, **late)


def test_training_collapse_names_the_learning_rate():
    history = collapsing(**{"completions/repetitive": 1.0, "completions/identical_groups": 0.9})
    said = find_alarms(history, learning_rate=0.1, temperature=1.0, max_grad_norm=1.0)
    assert set(said) == {"training_collapse"}
    text = said["training_collapse"]
    assert "entropy fell from 6.20 to 0.05" in text and "100% of the completions loop" in text
    assert "lower the learning rate (it is 0.1)" in text and "max_grad_norm=1 is on" in text and "temperature" in text
    # What a collapse also shows is said once, as the collapse.
    symptoms = [{**entry, "completions/clipped_ratio": 1.0, "reward_std": 0.0, "frac_reward_zero_std": 1.0}
                for entry in history] + [evaluation(20, 0.8, eval_base_drift=5.0, eval_base_nll=6.0)]
    assert set(find_alarms(symptoms, beta=0.0)) == {"training_collapse"}


def test_a_gradient_norm_spike_alone_is_no_collapse_but_is_told_with_one():
    spike = steps(20, entropy=6.2, grad_norm=0.3)
    spike[17]["grad_norm"] = 12.0
    assert find_alarms(spike) == {}
    history = collapsing()
    history[-2]["grad_norm"] = 30.0
    assert "the gradient norm jumped to 30 at step 19 (60 times its usual size)" in find_alarms(history)[
        "training_collapse"]


def test_near_greedy_sampling_from_the_first_steps():
    greedy = steps(5, entropy=0.01, **{"completions/identical_groups": 0.8})
    said = find_alarms(greedy, temperature=0.05)["near_greedy_sampling"]
    assert "80% of the groups were one completion repeated" in said and "temperature=0.05" in said
    # Identical groups that come later are a collapse, not the sampling.
    assert "near_greedy_sampling" not in find_alarms(collapsing(**{"completions/identical_groups": 1.0}))


def test_a_policy_narrowing_under_a_low_temperature_is_the_temperature_s_doing():
    history = collapsing(**{"completions/repetitive": 1.0, "completions/identical_groups": 0.9})
    said = find_alarms(history, learning_rate=1e-5, temperature=0.1)
    assert set(said) == {"near_greedy_sampling"}  # not training_collapse: the learning rate is not the cause
    assert "sampling at temperature=0.1 is close to greedy" in said["near_greedy_sampling"]
    assert "entropy fell from 6.20 to 0.05" in said["near_greedy_sampling"]
    late = steps(5, **{"completions/identical_groups": 0.0}) + steps(10, 6, **{"completions/identical_groups": 0.8})
    assert "80% of the groups are one completion repeated" in find_alarms(late, temperature=0.2)[
        "near_greedy_sampling"]
    assert set(find_alarms(late, temperature=0.7)) == {"training_collapse"}  # at a usual temperature: the updates


def test_kl_running_away_from_the_reference():
    history = [train(s, kl=0.02 * s) for s in range(1, 41)]  # 0.02 -> 0.8 nats per token
    said = find_alarms(history, beta=0.1)["kl_runaway"]
    assert "rose from 0.060 to 0.76 nats per token over the last 5 steps with beta=0.1" in said and "raise beta" in said
    assert "kl_runaway" not in find_alarms([train(s, kl=0.003 * s) for s in range(1, 41)], beta=0.04)
    # beta 0: the base view's drift at evaluations stands for it.
    drifted = steps(10) + [evaluation(10, 0.5, eval_base_drift=1.4)]
    assert "drifted 1.40 nats per token" in find_alarms(drifted, beta=0.0)["kl_runaway"]
    assert "kl_runaway" not in find_alarms(steps(10) + [evaluation(10, 0.5, eval_base_drift=0.4)], beta=0.0)


def run_history(rewards, lengths, base_nll, base_drift, eval_every=4):
    """Steps with reward and mean length, and an evaluation with the base-model measure every few steps."""
    history = []
    for step, (reward, length) in enumerate(zip(rewards, lengths), start=1):
        history.append(train(step, reward=reward, **{"completions/mean_length": length}))
        if step % eval_every == 0:
            at = step // eval_every - 1
            history.append({"step": step, "eval_reward": reward, "eval_base_nll": base_nll[at],
                            "eval_base_drift": base_drift[at]})
    return history


def stretched(values, count=16):
    """`values` spread over `count` steps, each repeated."""
    return [values[index * len(values) // count] for index in range(count)]


def test_reward_hacking_is_raised_when_reward_rises_as_answers_leave_the_base_model():
    # Shaped on SmolLM2-135M trained on short plain words (bench/reward_hacking.py): nonsense answers, reward up.
    history = run_history(stretched([0.43, 0.5, 0.62, 0.75, 0.86, 0.9, 0.91, 0.91]),
                          stretched([35, 33, 28, 22, 18, 16, 15, 15]), base_nll=[2.1, 3.4, 4.6, 5.2],
                          base_drift=[0.4, 0.7, 0.8, 0.9])
    text = find_alarms(history, generation_log_dir="out/generation_logs")["reward_hacking"]
    assert "(0.50 -> 0.91)" in text and "2.10 -> 5.20" in text and "shrank from 33 to 15 tokens" in text
    assert "out/generation_logs" in text


def test_no_reward_hacking_alarm_for_fluent_gains_flat_rewards_or_the_tiny_quick_test():
    healthy = run_history(stretched([0.3, 0.35, 0.42, 0.5, 0.55, 0.6]), stretched([30, 34, 38, 41, 44, 46]),
                          base_nll=[1.9, 2.0, 2.1, 2.0], base_drift=[0.2, 0.35, 0.5, 0.5])
    assert "reward_hacking" not in find_alarms(healthy)
    drifting_without_gain = run_history([0.5] * 16, stretched([30, 20, 14, 12]), base_nll=[2.0, 4.0, 4.0, 4.0],
                                        base_drift=[0.5, 0.9, 0.9, 0.9])
    assert "reward_hacking" not in find_alarms(drifting_without_gain)
    # The tiny quick test: a random model, so the base model's loss is ln(vocabulary) throughout.
    tiny = run_history(stretched([0.046, 0.046, 0.097, 0.152, 0.204, 0.215]), [31.8] * 16,
                       base_nll=[6.25, 6.26, 6.25, 6.25], base_drift=[0.12, 0.36, 0.48, 0.48])
    assert find_alarms(tiny, {"accuracy": 0.4, "length": 0.2, "quality": 0.4}, 32) == {}


def test_a_length_collapse_is_enough_without_the_base_measure():
    history = [train(s, reward=0.05 * s, **{"completions/mean_length": 40 - 2 * s}) for s in range(1, 16)]
    assert "shrank from 34 to 14 tokens" in find_alarms(history)["reward_hacking"]


def test_alarm_records_are_what_the_run_recorded_and_an_old_run_is_judged_from_its_logs():
    history = steps(6, **{"completions/clipped_ratio": 0.95})
    recorded = [{"id": "length_cap", "step": 5, "message": "cut off"}]
    assert alarm_records(history, recorded, max_completion_length=64) == recorded
    assert alarm_records(history, [], max_completion_length=64) == []  # judged at each step: nothing was wrong
    old = alarm_records(history, None, max_completion_length=64)  # a run without alarms.json
    assert [(record["id"], record["step"]) for record in old] == [("length_cap", 6)]


def test_a_component_that_scored_no_completion_of_a_batch():
    history = [train(1, **{"rewards/brevity/all_missing": 0.0, "rewards/never/all_missing": 0.0}),
               train(2, **{"rewards/brevity/all_missing": 0.0, "rewards/never/all_missing": 0.25})]
    text = find_alarms(history)["unscored_batches"]
    assert "never in 25% of the batches at step 2" in text and "brevity" not in text
    # None for some completions of every batch is TRL's convention for "skip", not an alarm; evaluations are not read.
    scored = [train(1, **{"rewards/brevity/all_missing": 0.0, "rewards/brevity/missing": 0.5}),
              {"step": 1, "eval_reward": 0.5, "eval_rewards/brevity/all_missing": 1.0}]
    assert "unscored_batches" not in find_alarms(scored)


def test_tools_never_called_after_the_first_evaluations():
    def history(calls: float, evaluations: int) -> list[dict]:
        return steps(5, **{"tools/call_frequency": calls, "tools/failure_frequency": 0.0}) + [
            evaluation(5, 0.1)] * evaluations

    assert "no tool has been called in any of the 5 steps" in find_alarms(history(0.0, 2))["tools_unused"]
    assert "tools_unused" not in find_alarms(history(0.0, 1))  # too early to say
    assert "tools_unused" not in find_alarms(history(0.25, 2))
    assert "tools_unused" not in find_alarms(steps(5) + [evaluation(5, 0.1)] * 2)  # no tools


def test_most_tool_calls_failing():
    def history(failing: float) -> list[dict]:
        return steps(5, **{"tools/call_frequency": 1.2, "tools/failure_frequency": failing})

    assert find_alarms(history(0.8))["tool_failures"].startswith("80% of recent tool calls failed")
    assert "tool_failures" not in find_alarms(history(0.5))


def test_completion_shapes_and_step_records():
    assert looping([7, 8] * 8) and not looping(list(range(16))) and not looping([7] * 7)
    pairs = [(1, False)] * 4 + [(1, True), (2, True), (3, False), (4, False)]  # groups of 4: one all the same
    assert completion_shapes(pairs, 4) == {"completions/identical_groups": 0.5, "completions/repetitive": 0.25}
    record = step_record(3, {"entropy": [math.nan, math.nan], "reward": [0.2, 0.4], "step_time": [0.1]},
                         [0.5, math.nan], 0.25)
    assert "entropy" not in record and "step_time" not in record  # nothing measured; not judged
    assert record["reward"] == 0.30000000000000004 and math.isnan(record["loss"]) and record["grad_norm"] == 0.25
