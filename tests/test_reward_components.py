"""Custom reward files, reward models, the guard TRL calls through, and the presets."""

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import FIXTURES, run_main
from grpo_tool.components import Component
from grpo_tool.custom_rewards import load_custom_reward
from grpo_tool.errors import UserError
from grpo_tool.reward_config import (
    DEFAULT_REWARD_CONFIG,
    load_reward_config,
    reward_preset_names,
    validate_reward_config,
)
from grpo_tool.reward_guard import RewardFunctionError, guarded, held_out
from grpo_tool.scoring import build_reward_functions, make_reward_model_reward
from rewards import custom_components, describe_rewards, resolve_rewards, rule_components

CUSTOM = FIXTURES / "custom_rewards.py"
WRITTEN = FIXTURES / "reward_pkg" / "my_rewards.py"  # an object, a partial, helpers imported from beside it
CONFIG = validate_reward_config({})


# custom reward functions

def test_custom_function_joins_the_components_with_its_weight():
    config = validate_reward_config({"custom_weights": {"exclamation_reward": 0.3}})
    components = rule_components(config) + custom_components([f"{CUSTOM}:exclamation_reward"], config)
    assert [c.name for c in components] == ["accuracy", "length", "quality", "exclamation_reward"]
    assert components[-1].weight == 0.3
    functions, weights = build_reward_functions(components, "multi")
    assert functions[-1].__name__ == "exclamation_reward" and weights[-1] == 0.3
    assert functions[-1](["Wow!", "ok"]) == [1.0, 0.0]


def test_custom_weight_defaults_to_one():
    assert custom_components([f"{CUSTOM}:exclamation_reward"], CONFIG)[0].weight == 1.0


@pytest.mark.parametrize("spec, fragment", [
    ("tests/fixtures/nope.py:f", "no such file"),
    (f"{CUSTOM}:missing_reward", "has no function 'missing_reward' (functions there: exclamation_reward, "
                                 "flat_for_some, picky_reward, positional_only)"),
    (f"{CUSTOM}:not_a_function", "has no function 'not_a_function'"),
    (f"{CUSTOM}:positional_only", "cannot take the keyword arguments TRL passes"),
    (str(CUSTOM), "give it as path/to/file.py:function_name"),
])
def test_custom_function_mistakes(spec, fragment):
    with pytest.raises(UserError) as error:
        load_custom_reward(spec)
    assert fragment in str(error.value)


def test_an_importable_function_by_its_dotted_path():
    accuracy = load_custom_reward("trl.rewards:accuracy_reward")  # as `trl grpo --reward_funcs` names it
    completions = [[{"role": "assistant", "content": "So \\boxed{\\frac{1}{2}}"}],
                   [{"role": "assistant", "content": "\\boxed{3}"}]]
    assert accuracy(completions, solution=["$0.5$", "$0.5$"]) == [1.0, 0.0]
    assert custom_components(["trl.rewards:accuracy_reward"], CONFIG)[0].name == "accuracy_reward"


def test_an_object_and_a_partial_load_score_and_take_the_name_the_spec_gives():
    components = custom_components([f"{WRITTEN}:near_ten_words", f"{WRITTEN}:says_the"], CONFIG)
    assert [c.name for c in components] == ["near_ten_words", "says_the"]
    functions, _ = build_reward_functions(components, "multi")
    assert [f.__name__ for f in functions] == ["near_ten_words", "says_the"]  # what TRL names the metrics by
    completions = ["one two three four five six seven eight nine ten", [{"role": "assistant", "content": "The end"}]]
    assert functions[0](completions) == [1.0, pytest.approx(1 / 9)]
    assert functions[1](completions) == [0.0, 1.0]


def test_a_reward_file_imports_the_helpers_beside_it_now_and_when_first_called(monkeypatch):
    # helpers.py is imported with the file, late_helpers.py only inside the reward: its folder stays findable.
    monkeypatch.delitem(sys.modules, "late_helpers", raising=False)
    (component,) = custom_components([f"{WRITTEN}:ends_a_sentence"], CONFIG)
    assert guarded(component)(["Done.", "not done"]) == [1.0, 0.0]


@pytest.mark.parametrize("source, name, fragment", [
    ("class Scorer:\n    def __call__(self, completions, **kwargs):\n        return [0.0] * len(completions)\n",
     "Scorer", "Scorer is a class; name an object of it instead: add e.g. scorer = Scorer(...) to"),
    ("class Scorer:\n    def __call__(self, completions):\n        return [0.0] * len(completions)\n"
     "scorer = Scorer()\n",
     "scorer", "define its method as def __call__(self, completions, **kwargs) in class Scorer"),
    ("import functools\ndef mentions(completions, word):\n    return [0.0] * len(completions)\n"
     "says_yes = functools.partial(mentions, word='yes')\n",
     "says_yes", "add **kwargs to mentions, the function the partial calls"),
    ("class Settings:\n    pass\nsettings = Settings()\n",
     "settings", "has no function 'settings' (settings is of type Settings, which cannot be called)"),
])
def test_objects_and_partials_that_cannot_be_rewards_say_how_to_fix_them(tmp_path, source, name, fragment):
    (tmp_path / "r.py").write_text(source)
    with pytest.raises(UserError) as error:
        load_custom_reward(f"{tmp_path / 'r.py'}:{name}")
    assert fragment in str(error.value)


def no_keywords(completions):
    return [0.0 for _ in completions]


@pytest.mark.parametrize("value, fragment", [
    (lambda completions, **kwargs: [0.0], "a lambda has no name to log its scores under"),
    (dict, "is a class (give an object of it)"),
    (3, "is of type int: give a function"),
    (no_keywords, "'no_keywords': no_keywords(completions) cannot take the keyword arguments TRL passes"),
])
def test_reward_functions_given_themselves_are_checked_as_names_are(value, fragment):
    with pytest.raises(UserError) as error:
        load_custom_reward(value)
    assert fragment in str(error.value)


@pytest.mark.parametrize("spec, fragment", [
    ("nosuchpackage.rewards:f", "no module named 'nosuchpackage' is installed"),
    ("json:nope", "json has no function 'nope'"),
    ("trl.rewards:nope", "(functions there: accuracy_reward, "),  # a module that loads its names lazily
    ("grpo_tool.answers:read_answer", "cannot take the keyword arguments TRL passes"),
    ("not a module:f", "is neither a file nor a module name"),
    ("trl.no_such_module:f", "importing module trl.no_such_module failed: ModuleNotFoundError"),
])
def test_dotted_path_mistakes(spec, fragment):
    with pytest.raises(UserError) as error:
        load_custom_reward(spec)
    assert fragment in str(error.value)


# which rewards a run has

def run_rewards(*flags: str) -> tuple[dict, list[str], str]:
    """(components and weights, settings notes, the start-up rewards line) of a command line."""
    from train_grpo import build_parser, config_from_args

    notes: list[str] = []
    config = config_from_args(build_parser().parse_args(["--model", "tiny", *flags]), notes)
    reward_config, components = resolve_rewards(config)
    line = describe_rewards(config, components, reward_config["reward_model_weight"] if config.reward_model else None)
    return {c.name: c.weight for c in components}, notes, line


def test_the_default_is_the_balanced_preset():
    components, _, line = run_rewards()
    assert components == {"accuracy": 0.4, "length": 0.2, "quality": 0.4}
    assert line == "accuracy (0.4), length (0.2), quality (0.4); the balanced preset, the default"


def test_rewards_of_your_own_replace_the_default_preset():
    components, _, line = run_rewards("--reward-fn", f"{CUSTOM}:exclamation_reward")
    assert components == {"exclamation_reward": 1.0}
    assert line.startswith("exclamation_reward (1.0); your own rewards only")
    _, _, line = run_rewards("--reward-model", "tiny")
    assert line.startswith("reward_model (1.0); your own rewards only")


def test_a_named_reward_config_keeps_its_components_beside_your_own(tmp_path):
    components, _, line = run_rewards("--reward-fn", f"{CUSTOM}:exclamation_reward", "--reward-config", "balanced")
    assert components == {"accuracy": 0.4, "length": 0.2, "quality": 0.4, "exclamation_reward": 1.0}
    assert line.endswith("; reward config balanced")
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"accuracy_weight": 0, "length_weight": 0, "quality_weight": 0,
                                   "custom_weights": {"exclamation_reward": 0.5, "picky_reward": 2}}))
    components, _, line = run_rewards("--reward-fn", f"{CUSTOM}:exclamation_reward", "--reward-fn",
                                      f"{CUSTOM}:picky_reward", "--reward-config", str(weights))
    assert line.startswith("exclamation_reward (0.5), picky_reward (2.0);")


def test_gsm8k_checks_answers_unless_you_bring_your_own_rewards():
    assert run_rewards("--dataset", "gsm8k")[0] == {"answer_match": 1.0}
    components, notes, _ = run_rewards("--dataset", "gsm8k", "--reward-fn", f"{CUSTOM}:exclamation_reward")
    assert components == {"exclamation_reward": 1.0}
    assert any("your rewards replace reward_config_name=verifiable from the dataset preset" in n for n in notes)
    components, _, _ = run_rewards("--dataset", "gsm8k", "--reward-fn", f"{CUSTOM}:exclamation_reward",
                                   "--reward-config", "verifiable")
    assert components == {"answer_match": 1.0, "exclamation_reward": 1.0}


def test_custom_weights_must_name_a_given_function():
    config = validate_reward_config({"custom_weights": {"typo_reward": 1.0}})
    with pytest.raises(UserError, match="custom_weights names typo_reward"):
        custom_components([f"{CUSTOM}:exclamation_reward"], config)


def test_a_custom_function_may_not_shadow_a_component(tmp_path):
    path = tmp_path / "r.py"
    path.write_text("def quality(completions, **kwargs):\n    return [0.0] * len(completions)\n")
    with pytest.raises(UserError, match="already named 'quality'"):
        custom_components([f"{path}:quality"], CONFIG)


# the guard between TRL and every component

def test_a_raising_component_names_itself_the_sample_and_the_line():
    function = guarded(Component("picky_reward", load_custom_reward(f"{CUSTOM}:picky_reward"), 1.0))
    with pytest.raises(RewardFunctionError) as error:
        function(["fine", "it goes boom", "fine"], prompts=["p0", "Tell me a story", "p2"], chosen=["a", "b", "c"])
    message = str(error.value)
    assert "reward component 'picky_reward' raised ValueError: cannot score a boom" in message
    assert "custom_rewards.py:" in message and "on sample 1 (prompt 'Tell me a story'" in message


def test_nan_becomes_none_and_is_counted():
    logged = {}
    function = guarded(Component("picky_reward", load_custom_reward(f"{CUSTOM}:picky_reward"), 1.0))
    scores = function(["sure", "unsure", "sure", "unsure"], log_metric=logged.__setitem__)
    assert scores == [1.0, None, 1.0, None]
    assert logged == {"rewards/picky_reward/missing": 0.5, "rewards/picky_reward/all_missing": 0.0}


def test_a_batch_without_any_score_is_counted_for_the_alarm():
    logged = {}
    function = guarded(Component("picky_reward", load_custom_reward(f"{CUSTOM}:picky_reward"), 1.0))
    assert function(["unsure", "unsure"], log_metric=logged.__setitem__) == [None, None]
    assert logged == {"rewards/picky_reward/missing": 1.0, "rewards/picky_reward/all_missing": 1.0}


def test_a_held_out_score_that_scores_nothing_is_still_an_error():
    function = held_out(Component("picky_reward", load_custom_reward(f"{CUSTOM}:picky_reward"), 0.0), lambda: False)
    with pytest.raises(RewardFunctionError, match="gave no score \\(None or NaN\\) for any of the 2 evaluation"):
        function(["unsure", "unsure"])


def test_a_component_that_exits_is_an_error_and_ctrl_c_still_stops():
    def quitter(completions, **kwargs):
        if any("stop" in completion for completion in completions):
            sys.exit(3)
        return [0.0] * len(completions)

    function = guarded(Component("quitter", quitter, 1.0))
    with pytest.raises(RewardFunctionError) as error:
        function(["fine", "stop here"], prompts=["p0", "Say stop"])
    message = str(error.value)
    assert message.startswith("reward component 'quitter' called sys.exit(3), at ")
    assert "on sample 1 (prompt 'Say stop', completion 'stop here')" in message
    assert message.endswith("a reward function must not end the program; return None for a completion it cannot "
                            "score, or raise an exception to stop training with its message")

    def interrupted(completions, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        guarded(Component("interrupted", interrupted, 1.0))(["a"])


def test_wrong_number_of_scores_is_an_error():
    function = guarded(Component("short", lambda completions, **kwargs: [1.0], 1.0))
    with pytest.raises(RewardFunctionError, match="returned 1 scores for 2 completions"):
        function(["a", "b"])


def test_single_mode_counts_a_missing_score_as_zero():
    components = [Component("picky_reward", load_custom_reward(f"{CUSTOM}:picky_reward"), 2.0)]
    (total,), _ = build_reward_functions(components, "single")
    assert total(["sure", "unsure"]) == [2.0, 0.0]


# a reward model

@pytest.fixture(scope="module")
def tiny_reward_model(tiny_model_cache):
    from grpo_tool.tiny_model import ensure_tiny_reward_model

    path = ensure_tiny_reward_model()
    return AutoModelForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_reward_model_scores_prompt_plus_completion(tiny_reward_model):
    model, tokenizer = tiny_reward_model
    reward = make_reward_model_reward(model, tokenizer)
    assert reward.__name__ == "reward_model_reward"
    scores = reward(["Paris.", "I do not know at all."], prompts=["Capital of France? ", "Capital of France? "])
    expected = []
    for text in ("Capital of France? Paris.", "Capital of France? I do not know at all."):
        encoded = tokenizer([text], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            expected.append(model(**encoded).logits[0, 0].item())
    assert scores == pytest.approx(expected, abs=1e-5)
    assert scores[0] != pytest.approx(scores[1])


def test_reward_model_reads_conversations_through_its_chat_template(tiny_reward_model):
    model, tokenizer = tiny_reward_model
    reward = make_reward_model_reward(model, tokenizer)
    prompt = [{"role": "user", "content": "Capital of France?"}]
    completion = [{"role": "assistant", "content": "Paris."}]
    text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    with torch.no_grad():
        expected = model(**tokenizer([text], return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    assert reward([completion], prompts=[prompt]) == pytest.approx([expected], abs=1e-5)


def test_reward_model_joins_both_modes_with_its_weight(tiny_reward_model):
    model, tokenizer = tiny_reward_model
    config = validate_reward_config({"reward_model_weight": 0.5})
    component = Component("reward_model", make_reward_model_reward(model, tokenizer), config["reward_model_weight"])
    components = rule_components(config) + [component]
    functions, weights = build_reward_functions(components, "multi")
    assert [f.__name__ for f in functions][-1] == "reward_model" and weights[-1] == 0.5
    (total,), _ = build_reward_functions(components, "single")
    rules = build_reward_functions(components[:-1], "single")[0][0]
    completions, prompts = ["yes, Paris"], ["Capital? "]
    rm_score = component.function(completions, prompts=prompts)[0]
    assert total(completions, prompts=prompts)[0] == pytest.approx(rules(completions, prompts=prompts)[0]
                                                                   + 0.5 * rm_score)


# presets

def test_presets_have_distinct_documented_purposes():
    names = reward_preset_names()
    assert {"balanced", "reference_match", "concise"} <= set(names)
    presets = [load_reward_config(name) for name in names]
    assert all(len(p["description"]) > 30 for p in presets)
    assert len({json.dumps({k: v for k, v in p.items() if k != "description"}, sort_keys=True)
                for p in presets}) == len(presets)
    assert load_reward_config("concise")["length"]["optimal_length"] < DEFAULT_REWARD_CONFIG["length"]["optimal_length"]


def test_training_stops_with_the_failing_component_named(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text("def crash_reward(completions, **kwargs):\n    raise RuntimeError('bug in my reward')\n")
    result = run_main("--quick-test", "--reward-fn", f"{crash}:crash_reward", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: reward component 'crash_reward' raised RuntimeError: bug in my reward")
    assert f"{crash}:2" in last and "on sample 0" in last


def test_a_reward_that_calls_sys_exit_while_training_is_one_error_line(tmp_path):
    quitter = tmp_path / "quitter.py"
    quitter.write_text("import sys\n\n\ndef quitter(completions, **kwargs):\n    sys.exit(3)\n")
    result = run_main("--quick-test", "--max-steps", "2", "--reward-fn", f"{quitter}:quitter", "--output-dir",
                      str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: reward component 'quitter' called sys.exit(3), at {quitter}:5, on sample 0")
    assert "a reward function must not end the program" in lines[-1]
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]


@pytest.fixture(scope="module")
def written_run(tmp_path_factory):
    """A multi run of rewards written as people write them, one of which never scores (the alarm's case)."""
    output_dir = tmp_path_factory.mktemp("written") / "out"
    result = run_main("--quick-test", "--reward-function", "multi", "--max-steps", "4", "--logging-steps", "1",
                      *[flag for name in ("near_ten_words", "says_the", "ends_a_sentence", "never_scores")
                        for flag in ("--reward-fn", f"{WRITTEN}:{name}")],
                      "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((output_dir / "final_model" / "trainer_state.json").read_text())["log_history"]
    return output_dir, result, history


def test_an_object_a_partial_and_a_file_with_helpers_train_under_their_names(written_run):
    _, _, history = written_run
    train = [entry for entry in history if "reward" in entry and "eval_reward" not in entry]
    assert len(train) == 4
    for name in ("near_ten_words", "says_the", "ends_a_sentence"):
        assert all(0 <= entry[f"rewards/{name}/mean"] <= 1 for entry in train), name
        assert all(entry[f"rewards/{name}/all_missing"] == 0 for entry in train), name


def test_a_component_that_never_scores_warns_once_and_raises_an_alarm(written_run):
    output_dir, result, history = written_run
    train = [entry for entry in history if "reward" in entry and "eval_reward" not in entry]
    assert train and all(entry["rewards/never_scores/all_missing"] == 1.0 for entry in train)
    (alarm,) = [a for a in json.loads((output_dir / "alarms.json").read_text()) if a["id"] == "unscored_batches"]
    assert alarm["step"] == 1 and "never_scores in 100% of the batches at step 1" in alarm["message"]
    assert "says_the" not in alarm["message"]
    # On the console once, though every one of the 4 logs shows it.
    assert result.stderr.count("alarm unscored_batches (step 1): a reward component scored no completion") == 1


def test_a_training_run_with_every_kind_of_component(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"max_steps": 4, "eval_steps": 2, "save_steps": 4, "logging_steps": 2}))
    reward_config = tmp_path / "rewards.json"
    reward_config.write_text(json.dumps({"custom_weights": {"exclamation_reward": 0.5}, "reward_model_weight": 0.2}))
    result = run_main("--quick-test", "--config", str(config), "--reward-function", "multi", "--reward-config",
                     str(reward_config), "--reward-model", "tiny", "--reward-fn", f"{CUSTOM}:exclamation_reward",
                     "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / "out" / "final_model" / "trainer_state.json").read_text())
    logged = {key for entry in state["log_history"] for key in entry}
    for name in ("accuracy", "length", "quality", "exclamation_reward", "reward_model"):
        assert f"rewards/{name}/mean" in logged
    entry = json.loads((tmp_path / "out" / "generation_logs" / "generation_log_step_4.json").read_text())[0]
    assert set(entry["rewards"]) == {"accuracy", "length", "quality", "exclamation_reward", "reward_model", "total"}
    assert Path(tmp_path / "out" / "reward_config.json").is_file()


def test_a_reward_model_alone_may_carry_all_the_weight(tmp_path):
    from config import build_config

    rules_off = tmp_path / "rules_off.json"
    rules_off.write_text(json.dumps({"accuracy_weight": 0, "length_weight": 0, "quality_weight": 0}))
    config = build_config(mode="quick_test", overrides={"reward_model": "tiny", "reward_config_path": str(rules_off)})
    assert config.reward_model == "tiny"
    with pytest.raises(UserError, match="every reward component has weight 0"):
        build_config(mode="quick_test", overrides={"reward_config_path": str(rules_off)})


@pytest.mark.parametrize("scores, fragment", [([float("inf"), 0.0], "scores must be finite"),
                                              ([10 ** 400, 0.0], "scores must be finite"),
                                              (["high", 0.0], "scores must be numbers or None")])
def test_scores_that_are_no_finite_numbers_are_one_error(scores, fragment):
    from grpo_tool.reward_guard import RewardFunctionError, clean_scores

    with pytest.raises(RewardFunctionError, match=fragment):
        clean_scores("odd", scores, 2)
