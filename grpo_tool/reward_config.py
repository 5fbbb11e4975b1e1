"""Reward configs: the original's `config/reward_config.json` (the one place its weights and keywords are written),
the presets in `config/rewards/` (each holding only what it changes), validation of a user's file, and which config
a run uses.

    balanced = load_reward_config("balanced")
    assert balanced["accuracy_weight"] == DEFAULT_REWARD_CONFIG["accuracy_weight"] and "format" in RULE_COMPONENTS
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grpo_tool.components import REWARD_MODEL
from grpo_tool.custom_rewards import reward_name
from grpo_tool.errors import UserError, near_miss
from grpo_tool.json_files import read_json_file

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
REWARD_PRESET_DIR = CONFIG_DIR / "rewards"
DEFAULT_REWARD_PRESET = "balanced"  # the reward config of a run that names none and brings no rewards of its own
# Where answer_match finds a row's reference answer when answer_match.reference_column is unset: the names GSM8K
# (answer), MATH and open-r1 (solution), Alpaca (output) and verl (ground_truth) give it.
REFERENCE_COLUMNS = ("answer", "solution", "output", "ground_truth", "reference")

# The registry of built-in reward components: the one list of their names, in the order they are logged, each with
# what it scores. A reward config weighs each with `<name>_weight` (0: it takes no part) and sets it up in its `<name>`
# section; rewards.py builds each with its make_<name>_reward. The list lives here and not beside those functions,
# because reward configs are checked here before any reward is built and grpo_tool/ never imports a root module:
# rewards.py reads it, so no second list of names exists to disagree with it.
BUILT_IN_COMPONENTS: dict[str, str] = {
    "accuracy": "correct keywords and closeness to a chosen answer",
    "length": "the length",
    "quality": "quality keywords",
    "answer_match": "the final answer against the row's reference",
    "format": "the layout of tags",
    "code_tests": "whether the completion's program passes the row's tests",
}
RULE_COMPONENTS = tuple(BUILT_IN_COMPONENTS)  # their names alone, in that order
# Every key a reward config may have: the components' weights and sections, and these.
OTHER_KEYS = ("description", "reward_model_weight", "custom_weights")
REWARD_CONFIG_KEYS = (*(f"{name}_weight" for name in RULE_COMPONENTS), *RULE_COMPONENTS, *OTHER_KEYS)
KNOWN_KEYS = (f"a reward config weighs the built-in components {', '.join(RULE_COMPONENTS)} with <name>_weight and "
              "sets each up in its <name> section; its other keys are description, reward_model_weight (the weight of "
              "a --reward-model) and custom_weights (the weights of --reward-fn functions, by name)")

# The original's config/reward_config.json: every loaded reward config is these values overlaid with the file's.
DEFAULT_REWARD_CONFIG_FILE = CONFIG_DIR / "reward_config.json"
DEFAULT_REWARD_CONFIG: dict[str, Any] = read_json_file(DEFAULT_REWARD_CONFIG_FILE, "reward config")


# Keys beyond the original's: what a preset is for, the components it does not weigh (off unless weighted), the
# answer-checking components' settings, and the weights of a --reward-model and of --reward-fn functions (by function
# name; 1.0 when not given).
EXTENSION_DEFAULTS: dict[str, Any] = {
    "description": "",
    **{f"{name}_weight": 0.0 for name in RULE_COMPONENTS if f"{name}_weight" not in DEFAULT_REWARD_CONFIG},
    "answer_match": {"reference_column": None, "tolerance": 1e-6},
    "format": {"tags": ["think", "answer"]},
    "code_tests": {"mode": "share", "sandbox": "bwrap", "timeout": 10, "memory_mb": 1024},
    "reward_model_weight": 1.0,
    "custom_weights": {},
}

TAG_NAME = re.compile(r"[A-Za-z_][\w.-]*")


def reward_config_choice(config) -> str | None:
    """The reward config a run uses: the preset or file it names; naming none, balanced (the original's), unless the
    run brings rewards of its own (--reward-fn, --reward-model, or an --environment, whose task it is to score its
    episodes): None, and those rewards alone, as TRL's reward_funcs are exactly what it is given. Naming a reward
    config as well keeps its components beside them."""
    named = config.reward_config_path or config.reward_config_name
    if named:
        return named
    return None if config.reward_functions or config.reward_model or config.environments else DEFAULT_REWARD_PRESET


def run_reward_config(config) -> dict:
    """The reward config of a run config (see reward_config_choice); with none, every built-in weight is 0.

    A weight for a reward the run does not have is an error, except two that are meaningful in another run: a built-in
    component's weight of 0 (a preset turns off what the defaults weigh that way) and reward_model_weight without a
    --reward-model (every run's effective reward config holds it, and may be given back with one). custom_weights
    naming a function no --reward-fn gives is seen here; with an --environment, whose rewards are named by their
    classes, only once its module is imported (rewards.custom_components)."""
    choice = reward_config_choice(config)
    if choice is None:
        return validate_reward_config({f"{name}_weight": 0 for name in RULE_COMPONENTS},
                                      source="the run's own rewards")
    reward_config = load_reward_config(choice)
    given = [reward_name(spec) for spec in config.reward_functions]
    if not config.environments and (problem := custom_weights_problem(reward_config["custom_weights"], given)):
        raise UserError(f"reward config {choice}: {problem}")
    return reward_config


def custom_weights_problem(custom_weights: dict, given: Sequence[str]) -> str | None:
    """custom_weights naming a reward the run does not have (a typo, or a --reward-fn left out), or None."""
    unknown = sorted(set(custom_weights) - set(given))
    if not unknown:
        return None
    return (f"custom_weights names {', '.join(f'{name}={custom_weights[name]!r}' for name in unknown)}, but no "
            f"--reward-fn or --environment gives a reward of that name (given: {', '.join(given) or 'none'}); "
            "give that --reward-fn, or drop the name from custom_weights")

ZERO_WEIGHTS = "every reward component has weight 0: give at least one a positive weight"


def rule_weights_problem(reward_config: dict, reward_functions: Sequence[str], reward_model: str | None) -> str | None:
    """The all-zero-weights mistake, seen before any --reward-fn file is imported (they count 1.0 unless set)."""
    weights = [reward_config[f"{name}_weight"] for name in RULE_COMPONENTS]
    if reward_functions:
        weights.append(max([1.0, *reward_config["custom_weights"].values()]))
    if reward_model:
        weights.append(reward_config["reward_model_weight"])
    return None if any(weight > 0 for weight in weights) else ZERO_WEIGHTS


def reward_preset_names() -> list[str]:
    return sorted(path.stem for path in REWARD_PRESET_DIR.glob("*.json"))


def load_reward_config(name_or_path: str) -> dict:
    """A validated reward config from a preset name in config/rewards/ or a JSON file path.

    Keys the file leaves out keep the original's values (DEFAULT_REWARD_CONFIG), so a preset holds only what it changes.
    """
    path = Path(name_or_path)
    if not (path.suffix == ".json" or path.exists()):
        path = REWARD_PRESET_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise UserError(f"unknown reward preset {name_or_path!r}: use one of {', '.join(reward_preset_names())} "
                            "or the path of a reward config JSON file")
    return validate_reward_config(read_json_file(path, "reward config"), source=str(path))


def validate_reward_config(data: Any, source: str = "reward config") -> dict:
    """Overlay `data` on the defaults and check every key, reporting all problems in one message."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a JSON object like config/reward_config.json")
    merged = {**copy.deepcopy(DEFAULT_REWARD_CONFIG), **copy.deepcopy(EXTENSION_DEFAULTS)}
    # The defaults file is the user's to edit too: a weight added there for no component would weigh nothing.
    problems = [f"{DEFAULT_REWARD_CONFIG_FILE}: {unknown_key_problem(key, value)}"
                for key, value in DEFAULT_REWARD_CONFIG.items() if key not in REWARD_CONFIG_KEYS]
    for key, value in data.items():
        if key not in REWARD_CONFIG_KEYS:
            problems.append(unknown_key_problem(key, value))
        elif key == "custom_weights":
            if not isinstance(value, dict) or not all(is_number(w) and w >= 0 for w in value.values()):
                problems.append("custom_weights must map function names to numbers >= 0")
            else:
                problems += [built_in_custom_weight(name, weight) for name, weight in value.items()
                             if name in BUILT_IN_COMPONENTS or name == REWARD_MODEL]
                merged[key] = dict(value)
        elif isinstance(merged[key], dict):
            if not isinstance(value, dict):
                problems.append(f"{key} must be an object with keys {', '.join(merged[key])}")
                continue
            for sub_key, sub_value in value.items():
                if sub_key not in merged[key]:
                    problems.append(f"unknown key {key}.{sub_key!r} = {preview(sub_value)}"
                                    f"{near_miss(str(sub_key), merged[key])} (valid keys: {', '.join(merged[key])})")
                else:
                    merged[key][sub_key] = sub_value
        else:
            merged[key] = value
    problems += reward_config_problems(merged)
    if problems:
        raise UserError(f"{source}: " + "; ".join(problems))
    return merged


def preview(value: Any) -> str:
    """A value as the JSON file writes it, cut short to fit a one-line message."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def unknown_key_problem(key: str, value: Any) -> str:
    """A key that is no reward config's, with its value and the components there are: a weight or settings for a
    component that does not exist would otherwise weigh nothing."""
    return (f"unknown key {key!r} = {preview(value)}{near_miss(key, REWARD_CONFIG_KEYS)}: no reward component is named "
            f"{key.removesuffix('_weight')!r}; {KNOWN_KEYS}")


def built_in_custom_weight(name: str, weight: Any) -> str:
    """custom_weights naming a built-in component or the reward model, each weighed by a key of its own."""
    return (f"custom_weights names {name}={weight!r}, but {name} is weighed by {name}_weight (custom_weights weighs "
            "--reward-fn functions and --environment rewards, by name): set that instead")


def reward_key_problem(word: str) -> str | None:
    """Where a reward weight or component's settings given as a flag or in a run config belong, or None for any other
    word (`--accuracy-weight` and `accuracy_weight` alike)."""
    key = word.lstrip("-").replace("-", "_")
    if key in REWARD_CONFIG_KEYS and key != "description":
        where = (f"{key} is a reward config key: write it in a JSON file (like config/rewards/concise.json) and give "
                 "that with --reward-config FILE")
    elif key.endswith("_weight"):
        where = (f"a reward weight belongs in a reward config (--reward-config FILE), and no reward component is named "
                 f"{key.removesuffix('_weight')!r}")
    else:
        return None
    return f"{where}; {KNOWN_KEYS}"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def reward_config_problems(config: dict) -> list[str]:
    problems = []
    for name in RULE_COMPONENTS:
        weight = config[f"{name}_weight"]
        if not is_number(weight) or weight < 0:
            problems.append(f"{name}_weight={weight!r} must be a number >= 0")
    for key in ("reward_model_weight",):
        if not is_number(config[key]) or config[key] < 0:
            problems.append(f"{key}={config[key]!r} must be a number >= 0")
    if not isinstance(config["description"], str):
        problems.append("description must be text")
    for section, key in (("accuracy", "correct_keywords"), ("quality", "quality_keywords"),
                         ("quality", "negative_keywords")):
        value = config[section][key]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            problems.append(f"{section}.{key} must be a list of non-empty strings")
    optimal = config["length"]["optimal_length"]
    if not isinstance(optimal, int) or isinstance(optimal, bool) or optimal < 0:
        problems.append(f"length.optimal_length={optimal!r} must be a whole number of words >= 0")
    falloff = config["length"]["length_weight"]
    if not is_number(falloff) or falloff < 0:
        problems.append(f"length.length_weight={falloff!r} must be a number >= 0 (how fast the reward falls per word)")
    for key in ("reward_scale", "penalty_scale"):
        if not is_number(config["quality"][key]):
            problems.append(f"quality.{key}={config['quality'][key]!r} must be a number")
    column = config["answer_match"]["reference_column"]
    if column is not None and not (isinstance(column, str) and column.strip()):
        problems.append(f"answer_match.reference_column={column!r} must be a column name, or null for the first of "
                        f"{', '.join(REFERENCE_COLUMNS)} the data has")
    tolerance = config["answer_match"]["tolerance"]
    if not is_number(tolerance) or tolerance < 0:
        problems.append(f"answer_match.tolerance={tolerance!r} must be a number >= 0 (relative, for references that "
                        "are not integers: 1e-6 accepts 0.3333333 for 1/3; an integer is always matched exactly)")
    tags = config["format"]["tags"]
    if not isinstance(tags, list) or not tags or not all(isinstance(tag, str) and TAG_NAME.fullmatch(tag)
                                                         for tag in tags):
        problems.append(f"format.tags={tags!r} must be a list of tag names such as [\"think\", \"answer\"] (letters, "
                        "digits, _ . -; no angle brackets)")
    problems += code_tests_problems(config["code_tests"])
    return problems


def code_tests_problems(settings: dict) -> list[str]:
    from grpo_tool.sandbox import SANDBOXES, UNSAFE_LABEL

    problems = []
    if settings["mode"] not in ("share", "all"):
        problems.append(f"code_tests.mode={settings['mode']!r} must be \"share\" (the share of a row's tests passed) "
                        "or \"all\" (1 only when every test passes)")
    if settings["sandbox"] not in SANDBOXES:
        problems.append(f"code_tests.sandbox={settings['sandbox']!r} must be \"bwrap\" (bubblewrap, the default) or "
                        f"\"unsafe-local\" ({UNSAFE_LABEL}); docker is not offered")
    timeout = settings["timeout"]
    if not is_number(timeout) or not 0 < timeout <= 600:
        problems.append(f"code_tests.timeout={timeout!r} must be seconds in (0, 600], the wall clock of one program")
    memory = settings["memory_mb"]
    if not isinstance(memory, int) or isinstance(memory, bool) or not 64 <= memory <= 1 << 20:
        problems.append(f"code_tests.memory_mb={memory!r} must be a whole number of megabytes, at least 64 (the "
                        "address space of each of a program's processes; Python itself takes about 30)")
    return problems


def reference_column(settings: dict, columns) -> str | None:
    """The column answer_match reads references from (settings: the config's answer_match section): the one set,
    else the first of REFERENCE_COLUMNS present."""
    if settings["reference_column"]:
        return settings["reference_column"]
    return next((name for name in REFERENCE_COLUMNS if name in columns), None)
