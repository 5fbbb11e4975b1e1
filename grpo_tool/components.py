"""A reward component (its name as logged, its function, its weight in the total) and the weighted total of several.
Everything that scores completions passes these around: the rewards, the guard, the reward check, the sampler.

    double = Component("double", lambda completions, **kwargs: [2.0] * len(completions), 0.5)
    assert weighted_totals([double], {"double": [2.0, None]}, 2) == [1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

RewardFunction = Callable[..., list[float]]
REWARD_MODEL = "reward_model"  # the component name of a --reward-model


class Component(NamedTuple):
    """One reward component: its name (as logged), its function and its weight in the total."""

    name: str
    function: RewardFunction
    weight: float


def weighted_totals(components: list[Component], scores: dict[str, list], count: int) -> list[float]:
    """sum(weight * score) for each completion, from each component's scores; a missing score counts 0."""
    return [sum(c.weight * (scores[c.name][index] or 0.0) for c in components) for index in range(count)]
