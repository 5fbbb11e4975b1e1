"""The reward check (`--check-rewards`): chosen against rejected pairs, sampled groups, and the command that spends
no training step."""

import json
import math

import pytest

from conftest import FIXTURES, run_main
from grpo_tool.answers import answer_matches, reference_answer
from grpo_tool.components import Component
from grpo_tool.custom_rewards import load_custom_reward
from grpo_tool.reward_check import check_groups, check_pairs, check_references, warnings_for
from grpo_tool.reward_config import load_reward_config

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


def misnamed_reward(completions, **kwargs):
    """Reads the reference under a name the data does not have, so it never finds a right answer."""
    references = kwargs.get("ground_truth") or [None] * len(completions)
    return [1.0 if reference and reference in str(c) else 0.0 for c, reference in zip(completions, references)]


def penalty_reward(completions, answer, **kwargs):
    """A penalty where a reward was meant: 1 for a wrong answer, 0 for the right one."""
    return [0.0 if reference_answer(a) and answer_matches(str(c), [a]) else 1.0 for c, a in zip(completions, answer)]


def test_reference_check_scores_each_reference_beside_a_wrong_answer():
    import datasets

    from rewards import make_answer_match_reward, make_format_reward

    rows = datasets.Dataset.from_list([
        {"prompt": "Sam reads 8 pages a day for 6 days. How many pages?", "answer": "8 * 6 = <<8*6=48>>48\n#### 48"},
        {"prompt": "Which is a fruit? (A) carrot (B) apple", "answer": "B"},
        {"prompt": "Is 7 prime?", "answer": "yes"},
        {"prompt": "Capital of France?", "answer": "Paris"},
        {"prompt": "Capital of Italy?", "answer": "Rome"},
        {"prompt": "No reference here", "answer": None},
    ])
    config = load_reward_config("reasoning")
    components = [Component("answer_match", make_answer_match_reward(config["answer_match"]), 1.0),
                  Component("format", make_format_reward(config["format"]), 0.2),
                  Component("misnamed_reward", misnamed_reward, 1.0),
                  Component("penalty_reward", penalty_reward, 1.0)]
    result = check_references(components, config, rows, "answer")
    assert result["rows"] == 5 and result["example"] == {"reference": "48", "wrong": "49"}
    stats = result["components"]
    assert (stats["answer_match"]["right"], stats["answer_match"]["wrong"]) == (1.0, 0.0)
    # The worked reference is the data's own layout; the tags are the one format credits, right and wrong alike.
    assert stats["answer_match"]["layout"] == "as written"
    assert (stats["format"]["right"], stats["format"]["wrong"], stats["format"]["layout"]) == (1.0, 1.0, "tagged")
    assert (stats["misnamed_reward"]["right"], stats["penalty_reward"]["right"]) == (0.0, 0.0)
    text = "\n".join(warnings_for({"pairs": {"pairs": 0}, "references": result, "groups": {"groups": 0}}))
    assert "misnamed_reward gives the reference answer 0 on 5 rows" in text
    assert "it is given the reference as the keyword argument 'answer'" in text
    assert "penalty_reward gives a right answer less than a wrong one (0.00 against 1.00" in text
    assert "answer_match gives" not in text and "format gives" not in text
    assert "no reward gives a right answer more than a wrong one" not in text

