"""Final answers: reading one out of a completion or a reference, and deciding whether two are the same.

An answer is read from the last `<answer>...</answer>`, else the last `\\boxed{...}`, else the text after the last
`####` (GSM8K's marker), looking inside each again (`<answer>\\boxed{3}</answer>` gives 3). A completion without any
of these is read by its last number, the way a person checks a worked answer; a reference without them is taken
whole ("42", "x^2+1"). Two answers are the same when their normalised texts are equal, when both are numbers within
a relative tolerance, or when math-verify (the library behind TRL's accuracy_reward) finds them mathematically
equivalent (1/2 and 0.5, \\frac{1}{2} and 0.5, 3\\sqrt{2} and \\sqrt{18}).

    assert same_answer(final_answer("So the total is \\\\boxed{1,000}."), reference_answer("#### 1000"))
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
HASH_MARK = "####"
BOXED = ("\\boxed{", "\\fbox{")
# A number as people write one: an optional sign, thousands separated by commas or not, an optional fraction part.
NUMBER = re.compile(r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-−]?\.\d+")
PARSE_SECONDS, VERIFY_SECONDS = 5, 5  # math-verify's own limits, for expressions that would take sympy too long


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces balanced), or None."""
    start = max(text.rfind(marker) for marker in BOXED)
    if start < 0:
        return None
    opening = text.index("{", start)
    depth = 0
    for index in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[opening + 1:index]
    return None  # never closed: the completion was cut off inside it


def marked_answer(text: str) -> str | None:
    """The answer a text marks as final (answer tag, \\boxed, ####), looked into again until no mark is left (each
    look takes a shorter text, so it ends)."""
    found = None
    while True:
        tagged = ANSWER_TAG.findall(text)
        if tagged:
            inner = tagged[-1]
        elif (boxed := last_boxed(text)) is not None:
            inner = boxed
        elif HASH_MARK in text:
            inner = text.rsplit(HASH_MARK, 1)[1].strip().split("\n", 1)[0]
        else:
            return found
        found = text = inner.strip()


def last_number(text: str) -> str | None:
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else None


def final_answer(completion: str) -> str | None:
    """What a completion answers: its marked answer, else its last number, else None (it gave none)."""
    marked = marked_answer(completion)
    return marked if marked is not None else last_number(completion)


def reference_answer(reference: str) -> str | None:
    """The answer a reference holds: its marked answer, else the whole text; None when it is empty."""
    marked = marked_answer(reference)
    text = (marked if marked is not None else reference).strip()
    return text or None


def normalised(answer: str) -> str:
    """Spacing, case, surrounding $ signs, a final full stop and thousands separators do not count."""
    text = " ".join(answer.strip().strip("$").strip().rstrip(".").split()).lower()
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).replace("−", "-")


def as_number(answer: str) -> float | None:
    text = normalised(answer).removeprefix("\\$").lstrip("$").removesuffix("%").replace(" ", "")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@functools.lru_cache(maxsize=4096)
def parsed(answer: str):
    """math-verify's reading of an answer, boxed so that its LaTeX and plain-expression readers both take it."""
    from math_verify import parse

    # math-verify's time limits use SIGALRM, which only the main thread may set.
    limit = PARSE_SECONDS if threading.current_thread() is threading.main_thread() else None
    return parse("\\boxed{" + answer + "}", parsing_timeout=limit)


def equivalent(reference: str, answer: str) -> bool:
    """math-verify's judgement (False when it cannot read either side)."""
    from math_verify import verify

    gold, target = parsed(reference), parsed(answer)
    if not gold or not target:
        return False
    limit = VERIFY_SECONDS if threading.current_thread() is threading.main_thread() else None
    return bool(verify(gold, target, timeout_seconds=limit))


def same_answer(answer: str | None, reference: str | None, tolerance: float = 1e-6) -> bool:
    """Whether `answer` is `reference`: equal text, numbers within `tolerance` (relative, at least absolute), or
    mathematically equivalent."""
    if not answer or not reference:
        return False
    if normalised(answer) == normalised(reference):
        return True
    number, expected = as_number(answer), as_number(reference)
    if number is not None and expected is not None:
        return abs(number - expected) <= tolerance * max(1.0, abs(expected))
    return equivalent(reference, answer)


# math-verify reports each expression it cannot read as a warning; a wrong answer is an ordinary outcome here.
logging.getLogger("math_verify").setLevel(logging.ERROR)
