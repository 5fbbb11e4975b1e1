"""Reward functions for GRPO: the original's accuracy, length and quality components, and their TRL wiring.

Every reward function has TRL's signature, `f(completions, **kwargs) -> list[float]`: completions arrive as strings
(plain-text prompts) or as `[{"role": "assistant", "content": ...}]` (chat prompts), and dataset columns such as
`chosen` / `rejected` arrive as keyword lists with one entry per completion.

    reward_config = load_reward_config("balanced")
    functions, weights = build_reward_functions(reward_config, "multi")

The components, each bounded:

- accuracy in [-0.5, 1]. `keyword` is 1 when a correct keyword appears, else 0. When the row has a `chosen`
  answer, `reference = overlap(c, chosen) - overlap(c, rejected)` (the rejected term is 0 when there is none), where
  `overlap` is the word-level F1 of the two texts (multiset of lower-cased words, as in SQuAD scoring) in [0, 1].
  accuracy = 0.5 * keyword + 0.5 * reference with a reference, else keyword.
- length in (0, 1]: 1 / (1 + length.length_weight * |words - length.optimal_length|). The unit is words (runs of
  non-space characters), so it means the same for every tokenizer; with the original's 150 and 0.1, a completion 10
  words off scores 0.5.
- quality in [penalty_scale, reward_scale] (either order): reward_scale when a quality keyword appears, plus
  penalty_scale when a negative keyword appears; 0 when neither does.

Keywords match case-insensitively where a word starts, and may run on: "correct" matches "Correctly" but not
"incorrect"; "맞아" matches "맞아요" (Korean attaches endings to the word) but "정확" does not match "부정확".
The weighted total is sum(weight_i * component_i) over the three components.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from errors import UserError
from json_files import read_json_file
from messages import answer_text, message_text

REWARD_PRESET_DIR = Path(__file__).resolve().parent / "config" / "rewards"
COMPONENTS = ("accuracy", "length", "quality")
REFERENCE_SHARE = 0.5  # the share of the accuracy component given to closeness to the reference answers

# The original's config/reward_config.json: every loaded reward config is these values overlaid with the file's.
DEFAULT_REWARD_CONFIG: dict[str, Any] = {
    "accuracy_weight": 0.4,
    "length_weight": 0.2,
    "quality_weight": 0.4,
    "accuracy": {"correct_keywords": ["correct", "right", "yes", "정확", "맞아"]},
    "length": {"optimal_length": 150, "length_weight": 0.1},
    "quality": {
        "reward_scale": 1.0,
        "penalty_scale": -0.5,
        "quality_keywords": ["좋아", "완벽", "우수"],
        "negative_keywords": ["모르겠", "잘못", "틀렸"],
    },
}

RewardFunction = Callable[..., list[float]]


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern | None:
    """One regex that finds any keyword where a word starts (see the module docstring)."""
    if not keywords:
        return None
    alternatives = "|".join(re.escape(keyword.lower()) for keyword in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})")


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def word_overlap(text: str, reference: str) -> float:
    """Word-level F1 between two texts, in [0, 1]."""
    text_words, reference_words = Counter(words(text)), Counter(words(reference))
    total = sum(text_words.values()) + sum(reference_words.values())
    if total == 0:
        return 0.0
    common = sum((text_words & reference_words).values())
    return 2.0 * common / total


def reference_score(text: str, chosen: str | None, rejected: str | None) -> float | None:
    """How much closer `text` is to the chosen answer than to the rejected one, in [-1, 1]; None without references."""
    if not chosen:
        return None
    score = word_overlap(text, chosen)
    if rejected:
        score -= word_overlap(text, rejected)
    return score


def column(kwargs: dict, name: str, count: int) -> list:
    values = kwargs.get(name)
    return list(values) if values is not None else [None] * count


def make_accuracy_reward(settings: dict) -> RewardFunction:
    pattern = keyword_pattern(settings["correct_keywords"])

    def accuracy_reward(completions, **kwargs) -> list[float]:
        chosen = column(kwargs, "chosen", len(completions))
        rejected = column(kwargs, "rejected", len(completions))
        scores = []
        for completion, chosen_answer, rejected_answer in zip(completions, chosen, rejected):
            text = message_text(completion)
            keyword = 1.0 if pattern and pattern.search(text.lower()) else 0.0
            reference = reference_score(text, answer_text(chosen_answer), answer_text(rejected_answer))
            if reference is None:
                scores.append(keyword)
            else:
                scores.append((1 - REFERENCE_SHARE) * keyword + REFERENCE_SHARE * reference)
        return scores

    return accuracy_reward


def make_length_reward(settings: dict) -> RewardFunction:
    optimal, falloff = settings["optimal_length"], settings["length_weight"]

    def length_reward(completions, **kwargs) -> list[float]:
        return [1.0 / (1.0 + falloff * abs(len(message_text(c).split()) - optimal)) for c in completions]

    return length_reward


def make_quality_reward(settings: dict) -> RewardFunction:
    good, bad = keyword_pattern(settings["quality_keywords"]), keyword_pattern(settings["negative_keywords"])
    reward_scale, penalty_scale = settings["reward_scale"], settings["penalty_scale"]

    def quality_reward(completions, **kwargs) -> list[float]:
        scores = []
        for completion in completions:
            text = message_text(completion).lower()
            score = reward_scale if good and good.search(text) else 0.0
            if bad and bad.search(text):
                score += penalty_scale
            scores.append(score)
        return scores

    return quality_reward


REWARD_COMPONENTS: dict[str, Callable[[dict], RewardFunction]] = {
    "accuracy": make_accuracy_reward,
    "length": make_length_reward,
    "quality": make_quality_reward,
}


def component_functions(reward_config: dict) -> dict[str, RewardFunction]:
    return {name: factory(reward_config[name]) for name, factory in REWARD_COMPONENTS.items()}


def component_weights(reward_config: dict) -> dict[str, float]:
    return {name: float(reward_config[f"{name}_weight"]) for name in REWARD_COMPONENTS}


def make_total_reward(reward_config: dict) -> RewardFunction:
    """The `single` mode: one function returning the weighted sum of the components."""
    functions, weights = component_functions(reward_config), component_weights(reward_config)

    def total_reward(completions, **kwargs) -> list[float]:
        totals = [0.0] * len(completions)
        for name, function in functions.items():
            for index, value in enumerate(function(completions, **kwargs)):
                totals[index] += weights[name] * value
        return totals

    return total_reward


def build_reward_functions(reward_config: dict, reward_function_type: str) -> tuple[list[RewardFunction], list[float]]:
    """The reward functions and weights to hand to TRL's GRPOTrainer (`reward_funcs`, `reward_weights`).

    `single`: one integrated function with weight 1. `multi`: one function per component, weighted by TRL, so TRL
    logs `rewards/<component>_reward/mean` for each.
    """
    if reward_function_type == "single":
        return [make_total_reward(reward_config)], [1.0]
    if reward_function_type == "multi":
        functions, weights = component_functions(reward_config), component_weights(reward_config)
        return list(functions.values()), [weights[name] for name in functions]
    raise UserError(f"reward_function_type={reward_function_type!r}: use 'single' or 'multi'")


def score_completions(reward_config: dict, completions: list, **columns) -> list[dict[str, float]]:
    """Per-completion component scores and their weighted total, for logs and reports."""
    functions, weights = component_functions(reward_config), component_weights(reward_config)
    per_component = {name: function(completions, **columns) for name, function in functions.items()}
    scores = []
    for index in range(len(completions)):
        entry = {name: values[index] for name, values in per_component.items()}
        entry["total"] = sum(weights[name] * entry[name] for name in functions)
        scores.append(entry)
    return scores


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
    merged = copy.deepcopy(DEFAULT_REWARD_CONFIG)
    problems = []
    for key, value in data.items():
        if key not in merged:
            problems.append(f"unknown key {key!r} (valid keys: {', '.join(DEFAULT_REWARD_CONFIG)})")
        elif isinstance(merged[key], dict):
            if not isinstance(value, dict):
                problems.append(f"{key} must be an object with keys {', '.join(merged[key])}")
                continue
            for sub_key, sub_value in value.items():
                if sub_key not in merged[key]:
                    problems.append(f"unknown key {key}.{sub_key!r} (valid keys: {', '.join(merged[key])})")
                else:
                    merged[key][sub_key] = sub_value
        else:
            merged[key] = value
    problems += reward_config_problems(merged)
    if problems:
        raise UserError(f"{source}: " + "; ".join(problems))
    return merged


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def reward_config_problems(config: dict) -> list[str]:
    problems = []
    for name in COMPONENTS:
        weight = config[f"{name}_weight"]
        if not is_number(weight) or weight < 0:
            problems.append(f"{name}_weight={weight!r} must be a number >= 0")
    if all(is_number(config[f"{name}_weight"]) for name in COMPONENTS) and not any(
            config[f"{name}_weight"] for name in COMPONENTS):
        problems.append("all component weights are 0: give at least one a positive weight")
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
    return problems
