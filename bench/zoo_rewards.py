"""Rewards of the alarm zoo (bench/alarm_zoo.py): each broken a known way, or healthy, on the tiny model.

The tiny model writes characters of its small vocabulary at random, so the rewards read characters: a healthy one
scores something the model can learn to write more of, a broken one is constant, almost never pays, or pays for the
wrong thing. Each takes TRL's (completions, **kwargs) and returns a float per completion (None: no score).
"""

from __future__ import annotations

import hashlib

VOWELS = set("aeiou")


def text(completion) -> str:
    return completion if isinstance(completion, str) else "".join(str(turn.get("content", "")) for turn in completion)


def share(completion, letters: set[str]) -> float:
    letters_in = [c for c in text(completion).lower() if c.isalpha()]
    return sum(c in letters for c in letters_in) / len(letters_in) if letters_in else 0.0


def vowels(completions, **kwargs) -> list[float]:
    """Healthy: the share of the letters that are vowels (each completion differs, and the model can learn it)."""
    return [share(c, VOWELS) for c in completions]


def many_vowels(completions, **kwargs) -> list[float]:
    """Healthy but slow: 1 when at least 40% of the letters are vowels; few completions do at the start."""
    return [float(share(c, VOWELS) >= 0.4) for c in completions]


def mostly_consonants(completions, **kwargs) -> list[float]:
    """A held-out score that falls as `vowels` rises: 1 when at least 65% of the letters are consonants."""
    return [float(bool(text(c).strip()) and share(c, VOWELS) <= 0.35) for c in completions]


def constant(completions, **kwargs) -> list[float]:
    """Broken: the same score whatever the completion."""
    return [1.0 for _ in completions]


def lottery(completions, **kwargs) -> list[float]:
    """Broken: pays 1 for about one completion in 60, by a hash of its text, so nothing the model does earns it."""
    return [float(int(hashlib.sha256(text(c).encode()).hexdigest(), 16) % 60 == 0) for c in completions]


def characters(completions, **kwargs) -> list[float]:
    """Next to `vowels`, a component a hundred times its size: it dominates the weighted reward."""
    return [float(len(text(c))) for c in completions]


def never(completions, **kwargs) -> list[None]:
    """Broken: never scores (a column read under the wrong name does this)."""
    return [None for _ in completions]


def brevity(completions, **kwargs) -> list[float]:
    """Gamed: pays for saying little, which the model learns by ending at once."""
    return [max(0.0, 1.0 - len(text(c)) / 100) for c in completions]
