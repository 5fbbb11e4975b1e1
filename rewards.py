"""Reward functions for GRPO: the original's accuracy, length and quality components, and their TRL wiring.

Every reward function has TRL's signature, `f(completions, **kwargs) -> list[float]`: completions arrive as strings
(plain-text prompts) or as `[{"role": "assistant", "content": ...}]` (chat prompts), and dataset columns such as
`chosen` / `rejected` arrive as keyword lists with one entry per completion.

    from config import GRPOConfig
    reward_config, components = resolve_rewards(GRPOConfig(reward_config_name="balanced"))
    functions, weights = build_reward_functions(components, "multi")

The components, each bounded:

- accuracy in [-0.5, 1]. `keyword` is 1 when a correct keyword appears, else 0. When the row has a `chosen`
  answer, `reference = overlap(c, chosen) - overlap(c, rejected)` (the rejected term is 0 when there is none), where
  `overlap` is the Dice coefficient of the two texts' sets of distinct lower-cased words, 2|A∩B| / (|A| + |B|), in
  [0, 1]: no model, and repeating a word earns nothing.
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

import contextlib
import copy
import importlib.util
import io
import inspect
import math
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from errors import UserError
from grpo_tool.reward_guard import call_reward, clean_scores, guarded
from json_files import read_json_file
from messages import answer_text, message_text, messages_as_text

REWARD_PRESET_DIR = Path(__file__).resolve().parent / "config" / "rewards"
REWARD_MODEL = "reward_model"  # the component name of a --reward-model
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

# Keys beyond the original's: what a preset is for, and the weights of a --reward-model and of --reward-fn functions
# (by function name; 1.0 when not given).
EXTENSION_DEFAULTS: dict[str, Any] = {"description": "", "reward_model_weight": 1.0, "custom_weights": {}}

RewardFunction = Callable[..., list[float]]


class KeywordMatcher:
    """Finds any keyword where a word starts (see the module docstring). A plain substring test goes first: it is
    far cheaper than the regex and rules out most texts."""

    def __init__(self, keywords: Sequence[str]):
        self.keywords = tuple(keyword.lower() for keyword in keywords)
        alternatives = "|".join(re.escape(keyword) for keyword in sorted(self.keywords, key=len, reverse=True))
        self.pattern = re.compile(rf"(?<!\w)(?:{alternatives})") if keywords else None

    def search(self, lowered_text: str) -> bool:
        """Whether a keyword starts a word of `lowered_text` (already lower-cased)."""
        return any(k in lowered_text for k in self.keywords) and self.pattern.search(lowered_text) is not None


def keyword_pattern(keywords: Sequence[str]) -> KeywordMatcher | None:
    return KeywordMatcher(keywords) if keywords else None


# Words are what lies between whitespace and ASCII punctuation, compared as UTF-8 bytes: the same words as r"\w+"
# for ordinary text in any script, at under half the cost (scoring must never slow a training step).
PUNCTUATION_TO_SPACE = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))


def word_set(text: str) -> frozenset[bytes]:
    """The distinct lower-cased words of a text."""
    return frozenset(text.lower().encode("utf-8").translate(PUNCTUATION_TO_SPACE).split())


def set_overlap(words: frozenset[bytes], reference: frozenset[bytes]) -> float:
    """The Dice coefficient of two word sets, 2|A∩B| / (|A| + |B|), in [0, 1]."""
    size = len(words) + len(reference)
    return 2.0 * len(words & reference) / size if size else 0.0


def word_overlap(text: str, reference: str) -> float:
    """How much two texts share their words, in [0, 1] (see set_overlap)."""
    return set_overlap(word_set(text), word_set(reference))


def reference_score(words: frozenset[bytes], chosen: frozenset[bytes] | None,
                    rejected: frozenset[bytes] | None) -> float | None:
    """How much closer a text is to the chosen answer than to the rejected one, in [-1, 1]; None without a chosen."""
    if chosen is None:
        return None
    score = set_overlap(words, chosen)
    if rejected is not None:
        score -= set_overlap(words, rejected)
    return score


def column(kwargs: dict, name: str, count: int) -> list:
    values = kwargs.get(name)
    return list(values) if values is not None else [None] * count


def make_accuracy_reward(settings: dict) -> RewardFunction:
    pattern = keyword_pattern(settings["correct_keywords"])

    def accuracy_reward(completions, **kwargs) -> list[float]:
        chosen = column(kwargs, "chosen", len(completions))
        rejected = column(kwargs, "rejected", len(completions))
        references: dict[str, frozenset[bytes]] = {}  # a group's completions share their references

        def reference_words(value) -> frozenset[bytes] | None:
            text = answer_text(value)
            if not text:
                return None
            if text not in references:
                references[text] = word_set(text)
            return references[text]

        scores = []
        for completion, chosen_answer, rejected_answer in zip(completions, chosen, rejected):
            text = message_text(completion).lower()
            keyword = 1.0 if pattern and pattern.search(text) else 0.0
            reference = reference_score(word_set(text), reference_words(chosen_answer),
                                        reference_words(rejected_answer))
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


class Component(NamedTuple):
    """One reward component: its name (as logged), its function and its weight in the total."""

    name: str
    function: RewardFunction
    weight: float


def rule_components(reward_config: dict) -> list[Component]:
    """The original's three components, weighted as the reward config says."""
    return [Component(name, factory(reward_config[name]), float(reward_config[f"{name}_weight"]))
            for name, factory in REWARD_COMPONENTS.items()]


# custom reward functions from files

def load_custom_reward(spec: str, flag: str = "--reward-fn") -> RewardFunction:
    """The function named by 'path/to/file.py:function_name', checked to take TRL's keyword arguments."""
    problem = reward_function_problem(spec, flag)
    if problem:
        raise UserError(problem)
    path_text, _, function_name = spec.rpartition(":")
    path = Path(path_text)
    module_spec = importlib.util.spec_from_file_location(f"custom_reward_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    printed = io.StringIO()
    try:
        # What the file prints while importing (argparse's usage, say) would break the one-line error.
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            module_spec.loader.exec_module(module)
    except SystemExit as stop:
        said = " ".join(printed.getvalue().split())[-200:]
        raise UserError(f"{flag} {spec!r}: importing {path} ended the program (exit status {stop.code}); a "
                        "reward file must not parse arguments or exit at import: put that under "
                        f"if __name__ == '__main__'" + (f" (it printed: {said})" if said else "")) from None
    except Exception as error:  # noqa: BLE001 - any failure in the user's file is reported as theirs
        where = f" at line {error.lineno}" if isinstance(error, SyntaxError) else ""
        raise UserError(f"{flag} {spec!r}: importing {path} failed{where}: {type(error).__name__}: "
                        f"{error}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        found = sorted(name for name, value in vars(module).items() if callable(value) and not name.startswith("_")
                       and getattr(value, "__module__", None) == module.__name__)
        raise UserError(f"{flag} {spec!r}: {path} has no function {function_name!r} "
                        f"(functions there: {', '.join(found) or 'none'})")
    parameters = inspect.signature(function).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise UserError(f"{flag} {spec!r}: {function_name}{inspect.signature(function)} cannot take the keyword "
                        "arguments TRL passes (prompts, completion_ids, trainer_state and the dataset's columns): "
                        f"define it as def {function_name}(completions, **kwargs)")
    return function


def reward_function_problem(spec: str, flag: str = "--reward-fn") -> str | None:
    """What is wrong with a --reward-fn spec that can be seen without importing the file, or None."""
    path_text, _, function_name = spec.rpartition(":")
    if not path_text or not function_name:
        return f"{flag} {spec!r}: give it as path/to/file.py:function_name"
    if not Path(path_text).is_file():
        return f"{flag} {spec!r}: no such file {path_text}"
    return None


def eval_components(specs: Sequence[str], training: list[Component]) -> list[Component]:
    """The --eval-reward-fn functions: scored at evaluations only, weight 0, named like no training component."""
    components: list[Component] = []
    for spec in specs:
        function = load_custom_reward(spec, "--eval-reward-fn")
        name = function.__name__
        if name in {c.name for c in training + components} or name in REWARD_COMPONENTS or name == REWARD_MODEL:
            raise UserError(f"--eval-reward-fn {spec!r}: a reward component is already named {name!r}; a held-out "
                            "score needs a name of its own (its name is the metric name)")
        components.append(Component(name, function, 0.0))
    return components


def custom_components(specs: Sequence[str], reward_config: dict) -> list[Component]:
    components = []
    for spec in specs:
        function = load_custom_reward(spec)
        name = function.__name__
        if name in {c.name for c in components} or name in REWARD_COMPONENTS or name == REWARD_MODEL:
            raise UserError(f"--reward-fn {spec!r}: another reward component is already named {name!r}; rename "
                            "the function (its name is the metric name)")
        components.append(Component(name, function, float(reward_config["custom_weights"].get(name, 1.0))))
    unknown = set(reward_config["custom_weights"]) - {c.name for c in components}
    if unknown:
        raise UserError(f"custom_weights names {', '.join(sorted(unknown))}, but no --reward-fn gives a function of "
                        f"that name (given: {', '.join(c.name for c in components) or 'none'})")
    return components


# a reward model

def make_reward_model_reward(model, tokenizer, batch_size: int = 16) -> RewardFunction:
    """A sequence-classification model as a reward function: the score (first logit) of prompt + completion.

    The text is built as TRL builds it for a model in `reward_funcs` (the conversation through the reward model's
    chat template; plain prompt + completion otherwise; right padding, no added special tokens), so its scores are
    the ones TRL would compute; being our own function, it can also sit inside `single`'s one integrated reward and
    serve the pre-training reward check.
    """
    import torch

    def reward_model_reward(completions, prompts=None, **kwargs) -> list[float]:
        prompts = prompts if prompts is not None else [""] * len(completions)
        texts = []
        for prompt, completion in zip(prompts, completions):
            if isinstance(prompt, list):
                conversation = prompt + (completion if isinstance(completion, list)
                                         else [{"role": "assistant", "content": completion}])
                if getattr(tokenizer, "chat_template", None):
                    texts.append(tokenizer.apply_chat_template(conversation, tokenize=False))
                else:
                    texts.append(messages_as_text(prompt) + " " + message_text(completion))
            else:
                texts.append(prompt + message_text(completion))
        scores = []
        device = next(model.parameters()).device
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                padding_side="right", add_special_tokens=False).to(device)
            with torch.inference_mode():
                scores += model(**encoded).logits[:, 0].float().tolist()
        return scores

    return reward_model_reward


def make_total_reward(components: list[Component]) -> RewardFunction:
    """The `single` mode: one function returning the weighted sum of the components (a missing score counts 0),
    logging each component's mean as rewards/<component>/mean so single runs show them too."""
    parts = [(component, guarded(component)) for component in components]

    def total_reward(completions, **kwargs) -> list[float]:
        log_metric = kwargs.get("log_metric")
        scores = {}
        for component, function in parts:
            scores[component.name] = function(completions, **kwargs)
            present = [value for value in scores[component.name] if value is not None]
            if log_metric is not None and present:
                log_metric(f"rewards/{component.name}/mean", sum(present) / len(present))
        return weighted_totals(components, scores, len(completions))

    return total_reward


def weighted_totals(components: list[Component], scores: dict[str, list], count: int) -> list[float]:
    """sum(weight * score) for each completion, from each component's scores; a missing score counts 0."""
    return [sum(c.weight * (scores[c.name][index] or 0.0) for c in components) for index in range(count)]


def resolve_rewards(config) -> tuple[dict, list[Component]]:
    """(reward config, components) of a run config: the rules and the --reward-fn functions, each file imported
    once. A --reward-model joins the components when it is loaded (grpo_tool.models.load_reward_model), after the
    backend is decided; its weight already counts here."""
    reward_config = load_reward_config(config.reward_config_path or config.reward_config_name)
    components = rule_components(reward_config) + custom_components(config.reward_functions, reward_config)
    weights = [c.weight for c in components] + ([reward_config["reward_model_weight"]] if config.reward_model else [])
    if not any(weight > 0 for weight in weights):
        raise UserError(ZERO_WEIGHTS)
    return reward_config, components


ZERO_WEIGHTS = "every reward component has weight 0: give at least one a positive weight"


def rule_weights_problem(reward_config: dict, reward_functions: Sequence[str], reward_model: str | None) -> str | None:
    """The all-zero-weights mistake, seen before any --reward-fn file is imported (they count 1.0 unless set)."""
    weights = [reward_config[f"{name}_weight"] for name in COMPONENTS]
    if reward_functions:
        weights.append(max([1.0, *reward_config["custom_weights"].values()]))
    if reward_model:
        weights.append(reward_config["reward_model_weight"])
    return None if any(weight > 0 for weight in weights) else ZERO_WEIGHTS


def build_reward_functions(components: list[Component], reward_function_type: str
                           ) -> tuple[list[RewardFunction], list[float]]:
    """The reward functions and weights to hand to TRL's GRPOTrainer (`reward_funcs`, `reward_weights`).

    `single`: one integrated function with weight 1. `multi`: one function per component, weighted by TRL, so TRL
    logs `rewards/<function name>/mean` for each.
    """
    if reward_function_type == "single":
        return [make_total_reward(components)], [1.0]
    if reward_function_type == "multi":
        return [guarded(c) for c in components], [c.weight for c in components]
    raise UserError(f"reward_function_type={reward_function_type!r}: use 'single' or 'multi'")


def score_completions(components: list[Component], completions: list, **columns) -> list[dict[str, float | None]]:
    """Per-completion component scores and their weighted total, for logs and reports."""
    per_component = {c.name: clean_scores(c.name, call_reward(c.function, completions=completions, **columns),
                                          len(completions))
                     for c in components}
    totals = weighted_totals(components, per_component, len(completions))
    return [{**{name: values[index] for name, values in per_component.items()}, "total": totals[index]}
            for index in range(len(completions))]


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
    problems = []
    for key, value in data.items():
        if key not in merged:
            problems.append(f"unknown key {key!r} (valid keys: {', '.join(merged)})")
        elif key == "custom_weights":
            if not isinstance(value, dict) or not all(is_number(w) and w >= 0 for w in value.values()):
                problems.append("custom_weights must map function names to numbers >= 0")
            else:
                merged[key] = dict(value)
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
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def reward_config_problems(config: dict) -> list[str]:
    problems = []
    for name in COMPONENTS:
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
    return problems
