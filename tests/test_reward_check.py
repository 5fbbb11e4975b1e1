"""The reward check (`--check-rewards`): chosen against rejected pairs, sampled groups, and the command that spends
no training step."""

import json
import math

import pytest

from conftest import FIXTURES, run_main
from grpo_tool.components import Component
from grpo_tool.custom_rewards import load_custom_reward
from grpo_tool.reward_check import check_groups, check_pairs, warnings_for

CUSTOM = FIXTURES / "custom_rewards.py"


def test_pair_check_measures_accuracy_and_margin():
    import datasets

    rows = datasets.Dataset.from_list([
        {"prompt": "q1", "chosen": "great answer!", "rejected": "bad answer"},
        {"prompt": "q2", "chosen": "also good!", "rejected": "meh"},
        {"prompt": "q3", "chosen": "no mark", "rejected": "wrong!"},
        {"prompt": "q4", "chosen": "only chosen", "rejected": None},
    ])
    components = [Component("exclamation_reward", load_custom_reward(f"{CUSTOM}:exclamation_reward"), 1.0)]
    result = check_pairs(components, rows)
    assert result["pairs"] == 3
    stats = result["components"]["exclamation_reward"]
    assert stats["pairwise_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert stats["mean_margin"] == pytest.approx(1 / 3, abs=1e-4)


def test_group_check_finds_flat_groups_errors_and_missing_scores():
    samples = [{"prompt": "p", "completion": text, "reward_input": text, "truncated": False}
               for text in ("a", "b", "c!", "d", "boom", "unsure", "ok", "fine")]
    components = [Component("exclamation_reward", load_custom_reward(f"{CUSTOM}:exclamation_reward"), 1.0),
                  Component("picky_reward", load_custom_reward(f"{CUSTOM}:picky_reward"), 1.0)]
    result = check_groups(components, samples, group_size=4, columns={})
    assert result["groups"] == 2
    exclamation, picky = result["components"]["exclamation_reward"], result["components"]["picky_reward"]
    assert exclamation["zero_variance_groups"] == 0.5 and exclamation["exceptions"] == 0
    assert (picky["exceptions"], picky["missing"]) == (1, 1)
    assert picky["zero_variance_groups"] == 1.0  # first group all 1.0; second has one score left
    assert math.isclose(exclamation["mean"], 0.125)
    text = " ".join(warnings_for({"pairs": {"pairs": 0}, "groups": result}))
    assert "picky_reward raised an exception on 1 of 8" in text and "GRPO learns nothing" in text


def test_check_rewards_cli_spends_no_training_step(tmp_path):
    output_dir = tmp_path / "out"
    result = run_main("--quick-test", "--check-rewards", "--reward-model", "tiny", "--reward-fn",
                     f"{CUSTOM}:exclamation_reward", "--reward-config", "balanced", "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    for fragment in ("pair acc", "accuracy", "exclamation_reward", "reward_model", "total", "warning:"):
        assert fragment in result.stdout
    report = json.loads((output_dir / "reward_check.json").read_text(encoding="utf-8"))
    assert report["pairs"]["pairs"] == 200 and report["groups"]["groups"] == 8 and report["groups"]["group_size"] == 4
    assert set(report["groups"]["components"]) == {"accuracy", "length", "quality", "exclamation_reward",
                                                   "reward_model", "total"}
    assert report["weights"]["reward_model"] == 1.0
    # A check writes its own file and nothing of a run's.
    assert sorted(path.name for path in output_dir.iterdir()) == ["reward_check.json"]
