"""Reward functions for GRPO: the original's accuracy, length and quality components, answer checking, and which
components a run has. Their wiring into TRL is grpo_tool/scoring.py's; reward configs are grpo_tool/reward_config.py's.

Every reward function has TRL's signature, `f(completions, **kwargs) -> list[float]`: completions arrive as strings
(plain-text prompts) or as `[{"role": "assistant", "content": ...}]` (chat prompts), and dataset columns such as
`chosen` / `rejected` or `answer` arrive as keyword lists with one entry per completion.

    from config import GRPOConfig
    reward_config, components = resolve_rewards(GRPOConfig(reward_config_name="balanced"))
    assert [c.name for c in components] == ["accuracy", "length", "quality"] and components[0].weight == 0.4

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
- answer_match in {0, 1}: 1 when the completion's final answer (its `<answer>` tag, `\\boxed{}` or `#### N`, else
  what "the answer is" states, else read by the kind of the reference) is the row's reference answer: the same
  integer, option letter, yes or no or words, a non-integer within answer_match.tolerance (relative), or an expression
  math-verify finds equivalent (grpo_tool/answers.py has the rules). The reference is the column
  answer_match.reference_column, by default the first the data has of REFERENCE_COLUMNS; a list there holds answers
  that are all accepted. A row without a reference scores None: left out of the mean, counted as
  rewards/answer_match/missing.
- format in {0, 0.5, 1}: 1 when the completion is exactly the tags of format.tags in order
  (`<think>...</think><answer>...</answer>` by default; whitespace around them allowed), 0.5 when those tags appear in
  that order with other text around them, else 0.
- code_tests in [0, 1]: the share of the row's tests (MBPP's test_list, HumanEval's check, stdin/stdout pairs) that
  the completion's program passes, run in the bubblewrap sandbox; 1 only when all pass with code_tests.mode "all".
  A program that does not run scores 0, a row without tests None (grpo_tool/code_tests.py, grpo_tool/sandbox.py).

Keywords match case-insensitively where a word starts, and may run on: "correct" matches "Correctly" but not
"incorrect"; "맞아" matches "맞아요" (Korean attaches endings to the word) but "정확" does not match "부정확".
The weighted total is sum(weight_i * component_i) over the components.

Which components a run has: those of the reward config it names (`--reward-config`, a preset or a file), plus its
own `--reward-fn` functions and `--reward-model`. Naming none means `balanced` (the original's), except for a run that
brings rewards of its own: its rewards are then exactly those, as TRL's `reward_funcs` are exactly what it is given.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Sequence

from grpo_tool.answers import accepted_answers, answer_matches
from grpo_tool.code_tests import (
    check_test_columns,
    make_code_tests_reward,  # noqa: F401 - REWARD_COMPONENTS finds it by its name
    rows_without_tests,
    sandbox_for,
)
from grpo_tool.components import REWARD_MODEL, Component, RewardFunction
from grpo_tool.custom_rewards import load_custom_reward, reward_name
from grpo_tool.errors import UserError
from grpo_tool.held_out import checks_answers
from grpo_tool.messages import answer_text, completion_text
from grpo_tool.reward_config import (
    REFERENCE_COLUMNS,
    RULE_COMPONENTS,
    ZERO_WEIGHTS,
    custom_weights_problem,
    reference_column,
    reward_config_choice,
    run_reward_config,
)

logger = logging.getLogger(__name__)

REFERENCE_SHARE = 0.5  # the share of the accuracy component given to closeness to the reference answers


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
            text = completion_text(completion).lower()
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
        return [1.0 / (1.0 + falloff * abs(len(completion_text(c).split()) - optimal)) for c in completions]

    return length_reward


def make_quality_reward(settings: dict) -> RewardFunction:
    good, bad = keyword_pattern(settings["quality_keywords"]), keyword_pattern(settings["negative_keywords"])
    reward_scale, penalty_scale = settings["reward_scale"], settings["penalty_scale"]

    def quality_reward(completions, **kwargs) -> list[float]:
        scores = []
        for completion in completions:
            text = completion_text(completion).lower()
            score = reward_scale if good and good.search(text) else 0.0
            if bad and bad.search(text):
                score += penalty_scale
            scores.append(score)
        return scores

    return quality_reward


def reference_rows(data):
    """The split whose references are checked: training, unless it is streamed (read only while training runs)."""
    return ("train", data["train"]) if hasattr(data["train"], "__len__") else ("eval", data["eval"])


def check_references(components: list[Component], reward_config: dict, data) -> str | None:
    """The column answer_match reads references from (None when answer_match takes no part). Data without it is an
    error that names the columns it has, found before any model loads."""
    if not checks_answers(components):
        return None
    columns = [name for name in reference_rows(data)[1].column_names or () if name != "prompt"]
    column = reference_column(reward_config["answer_match"], columns)
    if column not in columns:
        wanted = f"the column {column!r}" if column else f"one of the columns {', '.join(REFERENCE_COLUMNS)}"
        raise UserError(f"answer_match checks each completion against the row's reference answer, in {wanted}, but "
                        f"the data has {', '.join(columns) or 'no column besides the prompt'}: set "
                        "answer_match.reference_column in the reward config to the column that holds it")
    return column


def check_code_tests(components: list[Component], reward_config: dict, data) -> str | None:
    """code_tests' data holds tests in a layout it reads, and its sandbox holds the hostile programs: the line that
    says so (None when code_tests takes no part). Before any model loads."""
    if not any(component.name == "code_tests" for component in components):
        return None
    split, rows = reference_rows(data)
    check_test_columns([name for name in rows.column_names or () if name != "prompt"],
                       "the training data" if split == "train" else "the evaluation data")
    if hasattr(rows, "__len__") and (missing := rows_without_tests(rows)):
        logger.info("code_tests: %d of %d prompts have no tests it can read; they are skipped (None), not scored 0",
                    missing, len(rows))
    return sandbox_for(reward_config["code_tests"])[1]


def log_missing_references(components: list[Component], reward_config: dict, data) -> None:
    """How many rows answer_match will skip for want of a reference (they score None, not 0)."""
    column = check_references(components, reward_config, data)
    if column is None:
        return
    split, rows = reference_rows(data)
    missing = sum(not accepted_answers(value) for value in rows.with_format("arrow")[column].to_pylist())
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
                accepted[key] = accepted_answers(reference)
            if not accepted[key]:
                scores.append(None)  # nothing to check against: skipped, as TRL allows
                continue
            scores.append(1.0 if answer_matches(completion_text(completion), accepted[key], tolerance) else 0.0)
        return scores

    return answer_match_reward


def make_format_reward(settings: dict) -> RewardFunction:
    spans = [rf"<{re.escape(tag)}>.*?</{re.escape(tag)}>" for tag in settings["tags"]]
    exact = re.compile(r"\s*" + r"\s*".join(spans) + r"\s*", re.DOTALL)
    in_order = re.compile(".*?".join(spans), re.DOTALL)

    def format_reward(completions, **kwargs) -> list[float]:
        texts = [completion_text(c) for c in completions]
        return [1.0 if exact.fullmatch(text) else 0.5 if in_order.search(text) else 0.0 for text in texts]

    return format_reward


# The registry: each built-in component and the factory that builds it from its reward config section. The names are
# grpo_tool.reward_config's RULE_COMPONENTS, the one list of them (reward configs are checked there, and grpo_tool/
# cannot import this module); each name's factory is the make_<name>_reward of this module, so a name without one
# stops this import, and tests/test_rewards.py finds a factory without a name.
REWARD_COMPONENTS: dict[str, Callable[[dict], RewardFunction]] = {
    name: globals()[f"make_{name}_reward"] for name in RULE_COMPONENTS}


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


def custom_components(specs: Sequence[str], reward_config: dict, environment_rewards: Sequence[Component] = ()
                      ) -> list[Component]:
    """The --reward-fn functions and the environments' get_reward, each weighted by custom_weights (1.0 unless
    named there)."""
    components = []
    for spec in specs:
        function = load_custom_reward(spec)
        name = reward_name(spec)
        if name in {c.name for c in components} or name in REWARD_COMPONENTS or name == REWARD_MODEL:
            raise UserError(f"--reward-fn {spec!r}: another reward component is already named {name!r}; rename "
                            "the function in its file (the name after the colon is the metric name)")
        components.append(Component(name, function, float(reward_config["custom_weights"].get(name, 1.0))))
    for reward in environment_rewards:
        if reward.name in {c.name for c in components} or reward.name in REWARD_COMPONENTS:
            raise UserError(f"--environment {reward.name}: another reward component is already named {reward.name!r} "
                            "(an environment's get_reward is logged under its class name); rename one")
        components.append(reward._replace(weight=float(reward_config["custom_weights"].get(reward.name, 1.0))))
    if problem := custom_weights_problem(reward_config["custom_weights"], [c.name for c in components]):
        raise UserError(problem)
    return components


def describe_rewards(config, components: list[Component], reward_model_weight: float | None) -> str:
    """The start-up line that says which rewards a run trains on, their weights, and where they came from."""
    weighted = [f"{c.name} ({float(c.weight)})" for c in components]
    if reward_model_weight is not None:
        weighted.append(f"{REWARD_MODEL} ({float(reward_model_weight)})")
    choice = reward_config_choice(config)
    if choice is None:
        origin = ("your own rewards only: with --reward-fn, --reward-model or --environment and no --reward-config, "
                  "no preset's components join them (name one, e.g. --reward-config balanced, to add its components)")
    elif config.reward_config_path or config.reward_config_name:
        origin = f"reward config {choice}"
    else:
        origin = f"the {choice} preset, the default"
    return f"{', '.join(weighted)}; {origin}"


def resolve_rewards(config, environment_rewards: Sequence[Component] = ()) -> tuple[dict, list[Component]]:
    """(reward config, components) of a run config: the rules, the --reward-fn functions (each file imported once)
    and the environments' get_reward (`environment_rewards`, from grpo_tool.tools.resolve). A --reward-model joins
    the components when it is loaded (grpo_tool.models.load_reward_model), after the backend is decided; its weight
    already counts here."""
    reward_config = run_reward_config(config)
    components = rule_components(reward_config) + custom_components(config.reward_functions, reward_config,
                                                                    environment_rewards)
    weights = [c.weight for c in components] + ([reward_config["reward_model_weight"]] if config.reward_model else [])
    if not any(weight > 0 for weight in weights):
        if config.environments and not environment_rewards:
            raise UserError("no rewards: the environment has no get_reward() method and no --reward-fn, "
                            "--reward-model or --reward-config gives one; add get_reward(self) -> float to it, or "
                            "give a reward")
        raise UserError(ZERO_WEIGHTS)
    return reward_config, components


