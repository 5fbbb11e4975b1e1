"""Guarding what TRL calls: a reward component that raises, exits, returns the wrong shape or NaN stops with a
message a person can act on, instead of a traceback from deep inside TRL (or a silent exit).

    from grpo_tool.components import Component
    function = guarded(Component("brevity", lambda completions, **kwargs: [1.0, float("nan")], 1.0))
    assert function(["a", "b"]) == [1.0, None] and function.__name__ == "brevity"    # NaN: no score; TRL logs "brevity"
"""

from __future__ import annotations

import asyncio
import inspect
import math
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grpo_tool import metrics
from grpo_tool.errors import UserError
from grpo_tool.messages import message_text

if TYPE_CHECKING:
    from grpo_tool.components import Component, RewardFunction


# rewards/<name>/all_missing: the share of a component's batches in which it scored no completion (the batch trained
# without it); alarms.unscored_batches reads it.
ALL_MISSING = "all_missing"


class RewardFunctionError(UserError):
    """A reward component raised while training: names the component, the sample and where in its code."""


class RewardExit(Exception):
    """A reward function called sys.exit (or raised SystemExit). Made an ordinary exception where the function is
    called, so that every caller (the guard, the reward check) reports it as that reward's failure instead of the
    program ending without a word; Ctrl-C (KeyboardInterrupt) is left alone and still stops the run."""

    def __init__(self, code):
        super().__init__(f"called sys.exit({'' if code is None else repr(code)})")


def error_location(error: BaseException, function: RewardFunction, arguments, name: str | None = None) -> str | None:
    """Where a reward function failed: the file:line of the innermost frame, or, when the call itself failed (its
    parameters do not take the arguments: a dataset column it needs is missing, say), the call with the arguments
    it was given, under `name` (a partial or a callable object has no __name__ of its own)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return None
    if frames[-1].filename == __file__:
        try:
            signature = str(inspect.signature(function))
        except (TypeError, ValueError):
            signature = "(...)"
        name = name or getattr(function, "__name__", "the reward function")
        return f"calling {name}{signature} with {', '.join(arguments)}"
    return f"at {frames[-1].filename}:{frames[-1].lineno}"


def describe_failure(name: str, function: RewardFunction, completions: list, kwargs: dict, error: Exception) -> str:
    index = first_failing_sample(function, completions, kwargs)
    where = f", {location}" if (location := error_location(error, function, ["completions", *kwargs], name)) else ""
    if isinstance(error, RewardExit):
        detail = f"reward component {name!r} {error}{where}"
    else:
        detail = f"reward component {name!r} raised {type(error).__name__}: {error}{where}"
    if index is not None:
        prompts = kwargs.get("prompts") or [None] * len(completions)
        detail += (f", on sample {index} (prompt {preview_text(prompts[index])!r}, completion "
                   f"{preview_text(completions[index])!r})")
    if isinstance(error, RewardExit):
        detail += (": a reward function must not end the program; return None for a completion it cannot score, or "
                   "raise an exception to stop training with its message")
    return detail


def preview_text(value: Any, limit: int = 60) -> str:
    text = " ".join(message_text(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def sample_arguments(kwargs: dict, index: int, count: int) -> dict:
    """The keyword arguments of one sample: per-completion lists cut to that sample, the rest as they are."""
    return {key: [value[index]] if isinstance(value, list) and len(value) == count else value
            for key, value in kwargs.items()}


def first_failing_sample(function: RewardFunction, completions: list, kwargs: dict) -> int | None:
    for index in range(len(completions)):
        try:
            call_reward(function, completions=[completions[index]], **sample_arguments(kwargs, index, len(completions)))
        except Exception:  # noqa: BLE001 - finding which sample fails is the point
            return index
    return None


def clean_scores(name: str, values: Any, count: int) -> list[float | None]:
    """The scores as floats, None for a missing or NaN score (TRL leaves those out of the mean). Any sequence of
    numbers is taken (a list, a tuple, a numpy array); an infinite score is an error, since it would zero the loss."""
    sequence = not isinstance(values, (str, bytes, dict)) and hasattr(values, "__len__") and hasattr(values, "__iter__")
    if not sequence or len(values) != count:
        length = f"{len(values)} scores" if sequence else f"a {type(values).__name__}"
        raise RewardFunctionError(f"reward component {name!r} returned {length} for {count} completions; "
                                  "return a list with one float (or None) per completion")
    cleaned = []
    for value in values:
        if value is None:
            cleaned.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RewardFunctionError(f"reward component {name!r} returned {value!r:.80}; scores must be numbers or "
                                      "None") from None
        except OverflowError:  # an int beyond a float's range
            number = math.inf
        if math.isinf(number):
            raise RewardFunctionError(f"reward component {name!r} returned {value!r:.80}; scores must be finite (an "
                                      "infinite reward makes every advantage NaN or 0 and the run learns nothing)")
        cleaned.append(None if math.isnan(number) else number)
    return cleaned


def call_reward(function: RewardFunction, **arguments):
    """A reward function's result; an async one (TRL accepts those) is run to completion here. sys.exit in it
    becomes RewardExit, keeping the traceback that leads to the line that called it."""
    try:
        result = function(**arguments)
        return asyncio.run(result) if inspect.isawaitable(result) else result
    except SystemExit as stop:
        raise RewardExit(stop.code).with_traceback(stop.__traceback__) from None


def scored_nothing(scores: list[float | None]) -> bool:
    """Whether a batch got no score at all (every one None or NaN): in `multi`, TRL then has NaN for each completion."""
    return bool(scores) and all(score is None for score in scores)


def guarded(component: Component) -> RewardFunction:
    """The component's function as TRL should call it: a failure (an exception, or sys.exit) becomes an error naming
    component and sample, NaN becomes None, and two shares are logged: rewards/<name>/missing, of the completions
    without a score, and rewards/<name>/all_missing, of the batches without any.
    Ctrl-C (KeyboardInterrupt) passes through: it must still stop the run."""
    function = component.function

    def call(completions, **kwargs):
        try:
            values = call_reward(function, completions=completions, **kwargs)
        except RewardFunctionError:
            raise
        except Exception as error:  # noqa: BLE001 - reported with the component and sample that failed
            raise RewardFunctionError(describe_failure(component.name, function, completions, kwargs, error)) from None
        scores = clean_scores(component.name, values, len(completions))
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and completions:
            log_metric(metrics.component_share(component.name, "missing"), scores.count(None) / len(scores))
            log_metric(metrics.component_share(component.name, ALL_MISSING), float(scored_nothing(scores)))
        return scores

    # TRL names the metric after the function: the component's name, so that both reward modes log
    # rewards/<component>/mean and curves, alarms and reports line up whichever mode ran.
    call.__name__ = component.name
    return call


def held_out(component: Component, training: Callable[[], bool]) -> RewardFunction:
    """An --eval-reward-fn as TRL should call it: no score while training (weight 0 and None, so it never steers),
    the component's guarded score at evaluations, logged as eval_rewards/<name>/mean."""
    scorer = guarded(component)

    def call(completions, **kwargs):
        if training():
            return [None] * len(completions)
        scores = scorer(completions, **kwargs)
        if scored_nothing(scores):
            raise RewardFunctionError(f"--eval-reward-fn {component.name} gave no score (None or NaN) for any of the "
                                      f"{len(completions)} evaluation completions: a held-out score that never "
                                      "scores measures nothing; return a number for each completion")
        return scores

    call.__name__ = component.name
    return call
