"""Reward functions for GRPO: the original's accuracy, length and quality components, answer checking, and their TRL
wiring.

Every reward function has TRL's signature, `f(completions, **kwargs) -> list[float]`: completions arrive as strings
(plain-text prompts) or as `[{"role": "assistant", "content": ...}]` (chat prompts), and dataset columns such as
`chosen` / `rejected` or `answer` arrive as keyword lists with one entry per completion.

    from config import GRPOConfig
    reward_config, components = resolve_rewards(GRPOConfig(reward_config_name="balanced"))
    functions, weights = build_reward_functions(components, "multi")

The components, each bounded; a component takes part when its weight (`<name>_weight`) is above 0:

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
- answer_match in {0, 1}: 1 when the completion's final answer (its `<answer>` tag, `\\boxed{}`, `#### N`, else its
  last number) is the row's reference answer: equal text, a number within answer_match.tolerance (relative), or
  mathematically equivalent by math-verify (grpo_tool/answers.py). The reference is the column
  answer_match.reference_column, by default the first the data has of REFERENCE_COLUMNS; a list there holds answers
  that are all accepted. A row without a reference scores None: left out of the mean, counted as
  rewards/answer_match/missing.
- format in {0, 0.5, 1}: 1 when the completion is exactly the tags of format.tags in order
  (`<think>...</think><answer>...</answer>` by default; whitespace around them allowed), 0.5 when those tags appear in
  that order with other text around them, else 0.

Keywords match case-insensitively where a word starts, and may run on: "correct" matches "Correctly" but not
"incorrect"; "맞아" matches "맞아요" (Korean attaches endings to the word) but "정확" does not match "부정확".
The weighted total is sum(weight_i * component_i) over the components.

Which components a run has: those of the reward config it names (`--reward-config`, a preset or a file), plus its
own `--reward-fn` functions and `--reward-model`. Naming none means `balanced` (the original's), except for a run that
brings rewards of its own: its rewards are then exactly those, as TRL's `reward_funcs` are exactly what it is given.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from errors import UserError
from grpo_tool.reward_guard import guarded
from json_files import read_json_file
from grpo_tool.answers import final_answer, reference_answer, same_answer
from grpo_tool.custom_rewards import load_custom_reward, reward_name
from messages import answer_text, is_message_list, message_text, messages_as_text

logger = logging.getLogger(__name__)

REWARD_PRESET_DIR = Path(__file__).resolve().parent / "config" / "rewards"
REWARD_MODEL = "reward_model"  # the component name of a --reward-model
DEFAULT_REWARD_PRESET = "balanced"  # the reward config of a run that names none and brings no rewards of its own
# Where answer_match finds a row's reference answer when answer_match.reference_column is unset: the names GSM8K
# (answer), MATH and open-r1 (solution), Alpaca (output) and verl (ground_truth) give it.
REFERENCE_COLUMNS = ("answer", "solution", "output", "ground_truth", "reference")
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

# Keys beyond the original's: what a preset is for, the answer-checking components (off unless weighted), and the
# weights of a --reward-model and of --reward-fn functions (by function name; 1.0 when not given).
EXTENSION_DEFAULTS: dict[str, Any] = {
    "description": "",
    "answer_match_weight": 0.0,
    "format_weight": 0.0,
    "answer_match": {"reference_column": None, "tolerance": 1e-6},
    "format": {"tags": ["think", "answer"]},
    "reward_model_weight": 1.0,
    "custom_weights": {},
}
TAG_NAME = re.compile(r"[A-Za-z_][\w.-]*")

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


def passed_column(kwargs: dict, name: str, count: int) -> list:
    """A dataset column as TRL passed it, one value per completion; Nones when the data has no such column."""
    values = kwargs.get(name)
    return list(values) if values is not None else [None] * count


def make_accuracy_reward(settings: dict) -> RewardFunction:
    pattern = keyword_pattern(settings["correct_keywords"])

    def accuracy_reward(completions, **kwargs) -> list[float]:
        chosen = passed_column(kwargs, "chosen", len(completions))
        rejected = passed_column(kwargs, "rejected", len(completions))
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


def reference_column(settings: dict, columns) -> str | None:
    """The column answer_match reads references from: the one set, else the first of REFERENCE_COLUMNS present."""
    if settings["reference_column"]:
        return settings["reference_column"]
    return next((name for name in REFERENCE_COLUMNS if name in columns), None)


def reference_answers(value) -> list[str]:
    """The accepted answers of one reference value: a text or number, or a list of them; none when it is empty."""
    values = value if isinstance(value, (list, tuple)) and not is_message_list(value) else [value]
    return [answer for item in values if (text := answer_text(item)) and (answer := reference_answer(text))]


def reference_rows(data):
    """The split whose references are checked: training, unless it is streamed (read only while training runs)."""
    return ("train", data["train"]) if hasattr(data["train"], "__len__") else ("eval", data["eval"])


def check_references(components: list[Component], reward_config: dict, data) -> str | None:
    """The column answer_match reads references from (None when answer_match takes no part). Data without it is an
    error that names the columns it has, found before any model loads."""
    if not any(component.name == "answer_match" for component in components):
        return None
    columns = [name for name in reference_rows(data)[1].column_names or () if name != "prompt"]
    column = reference_column(reward_config["answer_match"], columns)
    if column not in columns:
        wanted = f"the column {column!r}" if column else f"one of the columns {', '.join(REFERENCE_COLUMNS)}"
        raise UserError(f"answer_match checks each completion against the row's reference answer, in {wanted}, but "
                        f"the data has {', '.join(columns) or 'no column besides the prompt'}: set "
                        "answer_match.reference_column in the reward config to the column that holds it")
    return column


def log_missing_references(components: list[Component], reward_config: dict, data) -> None:
    """How many rows answer_match will skip for want of a reference (they score None, not 0)."""
    column = check_references(components, reward_config, data)
    if column is None:
        return
    split, rows = reference_rows(data)
    missing = sum(not reference_answers(value) for value in rows.with_format("arrow")[column].to_pylist())
    if missing:
        logger.info("answer_match: %d of %d %s prompts have no reference answer in %r; they are skipped (None), not "
                    "scored 0", missing, len(rows), "training" if split == "train" else "evaluation", column)


def make_answer_match_reward(settings: dict) -> RewardFunction:
    tolerance = settings["tolerance"]

    def answer_match_reward(completions, **kwargs) -> list[float | None]:
        column = reference_column(settings, kwargs)
        references = passed_column(kwargs, column, len(completions)) if column else [None] * len(completions)
        accepted: dict[str, list[str]] = {}  # a group's completions share their reference
        scores = []
        for completion, reference in zip(completions, references):
            key = repr(reference)
            if key not in accepted:
                accepted[key] = reference_answers(reference)
            if not accepted[key]:
                scores.append(None)  # nothing to check against: skipped, as TRL allows
                continue
            answer = final_answer(message_text(completion))
            scores.append(1.0 if any(same_answer(answer, expected, tolerance) for expected in accepted[key]) else 0.0)
        return scores

    return answer_match_reward


def make_format_reward(settings: dict) -> RewardFunction:
    spans = [rf"<{re.escape(tag)}>.*?</{re.escape(tag)}>" for tag in settings["tags"]]
    exact = re.compile(r"\s*" + r"\s*".join(spans) + r"\s*", re.DOTALL)
    in_order = re.compile(".*?".join(spans), re.DOTALL)

    def format_reward(completions, **kwargs) -> list[float]:
        texts = [message_text(c) for c in completions]
        return [1.0 if exact.fullmatch(text) else 0.5 if in_order.search(text) else 0.0 for text in texts]

    return format_reward


REWARD_COMPONENTS: dict[str, Callable[[dict], RewardFunction]] = {
    "accuracy": make_accuracy_reward,
    "length": make_length_reward,
    "quality": make_quality_reward,
    "answer_match": make_answer_match_reward,
    "format": make_format_reward,
}


class Component(NamedTuple):
    """One reward component: its name (as logged), its function and its weight in the total."""

    name: str
    function: RewardFunction
    weight: float


def rule_components(reward_config: dict) -> list[Component]:
    """The built-in components the reward config weighs above 0. One at weight 0 takes no part: it would score data it
    may not fit (answer_match on preference data) and fill the logs; a score to watch but not train on is what
    --eval-reward-fn is for."""
    return [Component(name, factory(reward_config[name]), float(reward_config[f"{name}_weight"]))
            for name, factory in REWARD_COMPONENTS.items() if reward_config.get(f"{name}_weight", 0) > 0]


def eval_components(specs: Sequence[str], training: list[Component]) -> list[Component]:
    """The --eval-reward-fn functions: scored at evaluations only, weight 0, named like no training component."""
    components: list[Component] = []
    for spec in specs:
        function = load_custom_reward(spec, "--eval-reward-fn")
        name = reward_name(spec)
        if name in {c.name for c in training + components} or name in REWARD_COMPONENTS or name == REWARD_MODEL:
            raise UserError(f"--eval-reward-fn {spec!r}: a reward component is already named {name!r}; a held-out "
                            "score needs a name of its own (the name after the colon is the metric name)")
        components.append(Component(name, function, 0.0))
    return components


def custom_components(specs: Sequence[str], reward_config: dict) -> list[Component]:
    components = []
    for spec in specs:
        function = load_custom_reward(spec)
        name = reward_name(spec)
        if name in {c.name for c in components} or name in REWARD_COMPONENTS or name == REWARD_MODEL:
            raise UserError(f"--reward-fn {spec!r}: another reward component is already named {name!r}; rename "
                            "the function in its file (the name after the colon is the metric name)")
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


def reward_config_choice(config) -> str | None:
    """The reward config a run uses: the preset or file it names; naming none, balanced (the original's), unless the
    run brings rewards of its own (--reward-fn, --reward-model): None, and those rewards alone, as TRL's reward_funcs
    are exactly what it is given. Naming a reward config as well keeps its components beside them."""
    named = config.reward_config_path or config.reward_config_name
    if named:
        return named
    return None if config.reward_functions or config.reward_model else DEFAULT_REWARD_PRESET


def run_reward_config(config) -> dict:
    """The reward config of a run config (see reward_config_choice); with none, every built-in weight is 0."""
    choice = reward_config_choice(config)
    if choice is None:
        return validate_reward_config({f"{name}_weight": 0 for name in REWARD_COMPONENTS},
                                      source="the run's own rewards")
    return load_reward_config(choice)


def describe_rewards(config, components: list[Component], reward_model_weight: float | None) -> str:
    """The start-up line that says which rewards a run trains on, their weights, and where they came from."""
    weighted = [f"{c.name} ({float(c.weight)})" for c in components]
    if reward_model_weight is not None:
        weighted.append(f"{REWARD_MODEL} ({float(reward_model_weight)})")
    choice = reward_config_choice(config)
    if choice is None:
        origin = ("your own rewards only: with --reward-fn or --reward-model and no --reward-config, no preset's "
                  "components join them (name one, e.g. --reward-config balanced, to add its components)")
    elif config.reward_config_path or config.reward_config_name:
        origin = f"reward config {choice}"
    else:
        origin = f"the {choice} preset, the default"
    return f"{', '.join(weighted)}; {origin}"


def resolve_rewards(config) -> tuple[dict, list[Component]]:
    """(reward config, components) of a run config: the rules and the --reward-fn functions, each file imported
    once. A --reward-model joins the components when it is loaded (grpo_tool.models.load_reward_model), after the
    backend is decided; its weight already counts here."""
    reward_config = run_reward_config(config)
    components = rule_components(reward_config) + custom_components(config.reward_functions, reward_config)
    weights = [c.weight for c in components] + ([reward_config["reward_model_weight"]] if config.reward_model else [])
    if not any(weight > 0 for weight in weights):
        raise UserError(ZERO_WEIGHTS)
    return reward_config, components


ZERO_WEIGHTS = "every reward component has weight 0: give at least one a positive weight"


def rule_weights_problem(reward_config: dict, reward_functions: Sequence[str], reward_model: str | None) -> str | None:
    """The all-zero-weights mistake, seen before any --reward-fn file is imported (they count 1.0 unless set)."""
    weights = [reward_config[f"{name}_weight"] for name in REWARD_COMPONENTS]
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
    """Per-completion component scores and their weighted total, for logs and reports. Scored through the guard, as
    in training: a reward that fails here (on the evaluation prompts of the generation log) stops with the same one
    line."""
    per_component = {c.name: guarded(c)(completions, **columns) for c in components}
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
    for name in REWARD_COMPONENTS:
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
        problems.append(f"answer_match.tolerance={tolerance!r} must be a number >= 0 (relative: 1e-6 accepts 1000000 "
                        "for 1000001)")
    tags = config["format"]["tags"]
    if not isinstance(tags, list) or not tags or not all(isinstance(tag, str) and TAG_NAME.fullmatch(tag)
                                                         for tag in tags):
        problems.append(f"format.tags={tags!r} must be a list of tag names such as [\"think\", \"answer\"] (letters, "
                        "digits, _ . -; no angle brackets)")
    return problems
