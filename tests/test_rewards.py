"""Each reward component on literal completions, both completion shapes, and the single / multi wiring."""

import json
import re
import sys

import pytest

import rewards
from conftest import run_main
from grpo_tool.components import Component
from grpo_tool.errors import UserError
from grpo_tool.reward_check import NOT_ANSWER_CHECKERS
from grpo_tool.reward_config import (
    DEFAULT_REWARD_CONFIG,
    EXTENSION_DEFAULTS,
    REWARD_CONFIG_KEYS,
    RULE_COMPONENTS,
    load_reward_config,
    reward_preset_names,
    run_reward_config,
    validate_reward_config,
)
from grpo_tool.reward_guard import RewardFunctionError
from grpo_tool.scoring import build_reward_functions, score_completions
from grpo_tool.settings import GRPOConfig
from rewards import (
    REWARD_COMPONENTS,
    make_accuracy_reward,
    make_length_reward,
    make_quality_reward,
    resolve_rewards,
    rule_components,
    word_overlap,
)

CONFIG = DEFAULT_REWARD_CONFIG


def chat(text):
    return [{"role": "assistant", "content": text}]


def test_accuracy_keyword_without_references():
    accuracy = make_accuracy_reward(CONFIG["accuracy"])
    assert accuracy(["Yes, it is.", "No idea.", "That is CORRECT", "incorrect answer"]) == [1.0, 0.0, 1.0, 0.0]


def test_accuracy_korean_keywords_match_word_starts():
    accuracy = make_accuracy_reward(CONFIG["accuracy"])
    # Korean attaches endings ("맞아요"), but a word that merely contains the keyword ("부정확") is not a hit.
    assert accuracy(["맞아요", "정확해요", "부정확해요"]) == [1.0, 1.0, 0.0]


def test_accuracy_prefers_the_chosen_answer():
    accuracy = make_accuracy_reward(CONFIG["accuracy"])
    chosen, rejected = "The capital of France is Paris.", "I do not know the answer."
    close_to_chosen, close_to_rejected = "Paris is the capital of France.", "I do not know."
    scores = accuracy([close_to_chosen, close_to_rejected], chosen=[chosen, chosen], rejected=[rejected, rejected])
    assert scores[0] > 0 > scores[1]
    # Identical to the chosen answer, sharing no word with the rejected one, no keyword: 0.5 * (1 - 0).
    assert accuracy([chosen], chosen=[chosen], rejected=["nothing alike here"]) == [pytest.approx(0.5)]


def test_accuracy_reference_may_be_a_message_list():
    accuracy = make_accuracy_reward(CONFIG["accuracy"])
    chosen = [{"role": "user", "content": "Capital?"}, {"role": "assistant", "content": "Paris."}]
    assert accuracy(["Paris."], chosen=[chosen], rejected=[None]) == [pytest.approx(0.5)]


def test_word_overlap_is_dice_over_distinct_words():
    assert word_overlap("a b c d", "a b") == pytest.approx(2 * 2 / 6)
    assert word_overlap("Paris, PARIS paris!", "paris") == 1.0  # case, punctuation and repeats do not count
    assert word_overlap("서울은 수도", "서울은 도시") == pytest.approx(0.5)
    assert word_overlap("", "") == 0.0


def test_all_weights_zero_is_refused(tmp_path):
    path = tmp_path / "zero.json"
    path.write_text(json.dumps({"accuracy_weight": 0, "length_weight": 0, "quality_weight": 0}))
    with pytest.raises(UserError, match="every reward component has weight 0"):
        resolve_rewards(GRPOConfig(reward_config_path=str(path)))


def test_length_peaks_at_optimal_words():
    length = make_length_reward({"optimal_length": 4, "length_weight": 0.5})
    scores = length(["one two three four", "one two", "", "w " * 14])
    assert scores[0] == 1.0
    assert scores[1] == pytest.approx(1 / (1 + 0.5 * 2))
    assert scores[2] == pytest.approx(1 / (1 + 0.5 * 4))
    assert scores[3] == pytest.approx(1 / (1 + 0.5 * 10))


def test_original_length_settings_halve_ten_words_off():
    length = make_length_reward(CONFIG["length"])
    assert length([" ".join(["w"] * 140)]) == [pytest.approx(0.5)]


def test_quality_scales():
    quality = make_quality_reward(CONFIG["quality"])
    assert quality(["완벽해요", "잘 모르겠어요", "좋아요, 그런데 잘못했어요", "plain text"]) == [1.0, -0.5, 0.5, 0.0]


def test_chat_completions_are_scored_by_their_text():
    quality = make_quality_reward(CONFIG["quality"])
    length = make_length_reward({"optimal_length": 3, "length_weight": 1.0})
    assert quality([chat("완벽")]) == [1.0]
    # A chat completion is a one-element list; its length is its words, not 1.
    assert length([chat("one two three")]) == [1.0]


def test_single_is_the_weighted_sum_of_multi():
    completions = ["Yes, Paris is correct. 완벽", "모르겠어요", chat("right answer here")]
    columns = {"chosen": ["Paris", "Seoul", None], "rejected": ["Lyon", None, None], "trainer_state": None}
    components = rule_components(CONFIG)
    (total,), single_weights = build_reward_functions(components, "single")
    functions, weights = build_reward_functions(components, "multi")
    assert single_weights == [1.0]
    assert [f.__name__ for f in functions] == ["accuracy", "length", "quality"]  # TRL's metric names
    assert weights == [0.4, 0.2, 0.4]
    expected = [sum(w * f(completions, **columns)[i] for f, w in zip(functions, weights)) for i in range(3)]
    assert total(completions, **columns) == pytest.approx(expected)
    assert total.__name__ == "total_reward"
    scores = score_completions(components, completions, **columns)
    assert [s["total"] for s in scores] == pytest.approx(expected)


def test_single_logs_each_component_mean():
    logged = {}
    (total,), _ = build_reward_functions(rule_components(CONFIG), "single")
    total(["완벽 yes", "plain"], log_metric=lambda name, value: logged.setdefault(name, value))
    assert logged["rewards/quality/mean"] == pytest.approx(0.5)
    assert logged["rewards/accuracy/mean"] == pytest.approx(0.5)
    assert logged["rewards/length/missing"] == 0


def test_scores_for_the_logs_go_through_the_guard():
    def quitter(completions, **kwargs):
        sys.exit(3)

    with pytest.raises(RewardFunctionError, match="reward component 'quitter' called sys.exit\\(3\\)"):
        score_completions([Component("quitter", quitter, 1.0)], ["a"], prompts=["p"])


def test_every_shipped_reward_config_loads(tmp_path):
    assert "balanced" in reward_preset_names()
    for name in reward_preset_names():
        load_reward_config(name)
    original = load_reward_config("config/reward_config.json")
    assert {key: original[key] for key in DEFAULT_REWARD_CONFIG} == DEFAULT_REWARD_CONFIG
    balanced = load_reward_config("balanced")
    assert {key: balanced[key] for key in DEFAULT_REWARD_CONFIG} == DEFAULT_REWARD_CONFIG


def test_partial_reward_config_keeps_other_defaults(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"quality_weight": 1.0, "quality": {"quality_keywords": ["great"]}}))
    loaded = load_reward_config(str(path))
    assert loaded["quality_weight"] == 1.0 and loaded["quality"]["quality_keywords"] == ["great"]
    assert loaded["quality"]["negative_keywords"] == CONFIG["quality"]["negative_keywords"]
    assert loaded["accuracy_weight"] == 0.4


@pytest.mark.parametrize("data, fragment", [
    ({"acuracy_weight": 1}, "unknown key 'acuracy_weight'"),
    ({"brevity_weight": 0.5}, "unknown key 'brevity_weight' = 0.5: no reward component is named 'brevity'"),
    ({"brevity": {"limit": 3}}, "unknown key 'brevity' = {\"limit\": 3}: no reward component is named 'brevity'"),
    ({"custom_weights": {"accuracy": 2}}, "custom_weights names accuracy=2, but accuracy is weighed by accuracy_"),
    ({"custom_weights": {"reward_model": 2}}, "reward_model is weighed by reward_model_weight"),
    ({"length": {"optimal": 3}}, "unknown key length.'optimal'"),
    ({"length_weight": -1}, "length_weight=-1 must be a number >= 0"),
    ({"custom_weights": {"f": -1}}, "custom_weights must map function names to numbers >= 0"),
    ({"reward_model_weight": "high"}, "reward_model_weight='high'"),
    ({"accuracy": {"correct_keywords": "yes"}}, "accuracy.correct_keywords must be a list"),
    ({"length": {"optimal_length": 1.5}}, "length.optimal_length=1.5"),
])
def test_bad_reward_configs_are_named(data, fragment):
    with pytest.raises(UserError, match=None) as error:
        validate_reward_config(data)
    assert fragment in str(error.value)


def test_the_registry_is_the_one_list_of_built_in_components():
    # rewards.py builds exactly the registry's components, in its order, and has no factory the registry lacks.
    assert tuple(REWARD_COMPONENTS) == RULE_COMPONENTS
    factories = [name for name in vars(rewards) if re.fullmatch(r"make_\w+_reward", name)]
    assert sorted(name.removeprefix("make_").removesuffix("_reward") for name in factories) == sorted(RULE_COMPONENTS)
    everything = validate_reward_config({f"{name}_weight": 1 for name in RULE_COMPONENTS})
    built = rule_components(everything)
    assert [(c.name, c.function.__name__, c.weight) for c in built] == [
        (name, f"{name}_reward", 1.0) for name in RULE_COMPONENTS]
    # The defaults give a weight and settings to each component and to nothing else.
    assert sorted({**DEFAULT_REWARD_CONFIG, **EXTENSION_DEFAULTS}) == sorted(REWARD_CONFIG_KEYS)
    # The places that must still name them agree: rewards.py's docstring and the reward check's explanations.
    assert tuple(re.findall(r"^- (\w+) in ", rewards.__doc__, re.MULTILINE)) == RULE_COMPONENTS
    assert set(RULE_COMPONENTS) <= set(NOT_ANSWER_CHECKERS)


def test_an_unknown_component_lists_the_known_ones():
    with pytest.raises(UserError) as error:
        validate_reward_config({"accuracy_weight": 0.4, "brevity_weight": 0.5}, source="mine.json")
    message = str(error.value)
    assert message.startswith("mine.json: unknown key 'brevity_weight' = 0.5")
    assert f"the built-in components {', '.join(RULE_COMPONENTS)} with <name>_weight" in message


def test_settings_for_a_component_at_weight_0_are_kept_for_the_reward_check(tmp_path):
    # The reward check lays references out in format.tags and reads answer_match's column whatever their weights.
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"format": {"tags": ["reasoning", "answer"]}, "answer_match": {"tolerance": 0.01}}))
    loaded = load_reward_config(str(path))
    assert loaded["format_weight"] == 0 and loaded["format"]["tags"] == ["reasoning", "answer"]
    assert [c.name for c in rule_components(loaded)] == ["accuracy", "length", "quality"]


def test_a_runs_effective_reward_config_loads_back_with_or_without_a_reward_model(tmp_path):
    # Every run writes its effective reward config, reward_model_weight included; given back with --reward-config,
    # it must load in a run without a --reward-model too, so that weight is not an error there.
    path = tmp_path / "reward_config.json"
    path.write_text(json.dumps(load_reward_config("reasoning")))
    assert run_reward_config(GRPOConfig(reward_config_path=str(path))) == load_reward_config("reasoning")
    assert resolve_rewards(GRPOConfig(reward_config_path=str(path)))[1][0].name == "answer_match"


def test_custom_weights_for_a_function_the_run_lacks_is_found_before_any_import(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"custom_weights": {"typo_reward": 2}}))
    with pytest.raises(UserError, match="custom_weights names typo_reward=2, but no --reward-fn"):
        run_reward_config(GRPOConfig(reward_config_path=str(path)))
    with pytest.raises(UserError, match=r"given: mine_reward\)"):
        run_reward_config(GRPOConfig(reward_config_path=str(path), reward_functions=["no/such/file.py:mine_reward"]))
    given = GRPOConfig(reward_config_path=str(path), reward_functions=["no/such/file.py:typo_reward"])
    assert run_reward_config(given)["custom_weights"] == {"typo_reward": 2}


def test_an_unknown_components_weight_is_one_error_line_from_the_command_line(tmp_path):
    path = tmp_path / "rewards.json"
    path.write_text(json.dumps({"accuracy_weight": 0.4, "brevity_weight": 0.5}))
    result = run_main("--quick-test", "--reward-config", str(path), "--output-dir", str(tmp_path / "out"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert lines[-1].startswith(f"error: {path}: unknown key 'brevity_weight' = 0.5: no reward component is named")
    assert all(name in lines[-1] for name in RULE_COMPONENTS)
    assert not (tmp_path / "out").exists()


def test_unknown_reward_preset_lists_known_ones():
    with pytest.raises(UserError) as error:
        load_reward_config("nonexistent")
    assert "balanced" in str(error.value)
