"""Each alarm on a literal metric history: raised when the run is in trouble, silent when it is not."""

import math

from alarms import find_alarms


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


def test_nan_loss():
    history = [train(1, loss=0.1), train(2, loss=math.nan)]
    assert "NaN at step 2" in find_alarms(history)["nan_loss"]


def test_one_weighted_component_is_the_design_not_an_alarm():
    history = [train(s, **{"rewards/brevity/mean": 0.9, "rewards/accuracy/mean": 0.1}) for s in (1, 2, 3)]
    assert "dominant_component" not in find_alarms(history, {"brevity": 1.0, "accuracy": 0.0})
    assert "dominant_component" in find_alarms(history, {"brevity": 1.0, "accuracy": 0.01})
