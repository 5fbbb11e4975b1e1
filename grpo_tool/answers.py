"""Final answers: reading one out of a completion, and deciding whether it is the reference's (README's table,
"How answer_match decides", says the same for users).

What a completion answers, by the first rule that applies:

1. a marked answer: the last `<answer>...</answer>`, else the last `\\boxed{...}`, else the text after the last `####`,
  looked into again (`<answer>\\boxed{3}</answer>` is 3);
2. a stated one: the last "the answer is X", "final answer: X" or "answer: X", up to the end of its sentence (also
  inside a mark); "the answer is not 42" states nothing;
3. else the completion is read by the kind of answer the reference is (Reference.kind):
- number (`72`, `-3.5`, `$1,000`, `25%`, `3/4`, `seventy-two`, `18 dollars`): its last number, a LaTeX span one;
- option letter (`B`, `(B)`): its last `(B)`, `option B` or closing letter;
- yes or no (`yes`, `true`, `no`, `false`): its last word, else its last sentence's first, else its first;
- expression (`x^2+1`, `\\frac{1}{2}`, `(1, 2)`, `[0, 1)`): itself when it is one short line, else its last LaTeX
  span, else what follows the last `=` of its last sentence;
- text (`Paris`, `the Eiffel Tower`): itself when it is one short line, else its last sentence.

How that answer is compared, by the same kinds. Texts equal once spacing, case, `$` signs, a final full stop and
thousands separators are set aside are always the same answer. Beyond that:
- number: an integer reference is matched exactly, another within `tolerance` (relative); `25%` is 25 and 0.25; an
  answer stated with more ("42 apples", "3 + 4 = 7", "x = 5") gives the number after its last `=`, else its first;
- option letter, yes or no: the same letter, the same yes or no;
- expression: math-verify (the library behind TRL's accuracy_reward) finds them equivalent;
- text: the same words, case, punctuation and articles aside, or an answer that ends with them without negating
  them ("The capital is Paris." is Paris; "not Paris" is not).
A list of references accepts any of them.

    assert answer_matches("So the total is \\\\boxed{1,000}.", ["#### 1000"])
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from dataclasses import dataclass
from fractions import Fraction

from grpo_tool.messages import answer_text, is_message_list

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
HASH_MARK = "####"
BOXED = ("\\boxed{", "\\fbox{")
# A sentence that states its answer: "The answer is 42.", "Final Answer: 42", "**Answer:** (B)", "정답은 42입니다".
STATEMENT = re.compile(r"(?:\banswer\b\**\s*(?:is|was|would be|will be|should be|must be)\b\**\s*:?|\banswer\b\**\s*:"
                       r"|(?:정답|답)\s*(?:은|는|:))\**\s*", re.IGNORECASE)
STATEMENT_END = re.compile(r"[.!?。](?=\s|$)|\n")
KOREAN_COPULA = re.compile(r"\s*(?:입니다|이다|예요|이에요)\s*[.!]?$")
# A number as people write one: a sign, thousands separated by commas or not, a decimal part, a denominator, a percent.
NUMBER = re.compile(r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?|[-−]?\.\d+%?")
WHOLE_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?")
# A number that is a whole answer with its unit: "$18", "18 dollars", "5 cm", "25 percent".
NUMBER_WITH_UNIT = re.compile(r"\\?\$?\s*([-−]?[\d,.]*\d(?:/\d+)?)\s*(%|\s+percent\b)?(?:\s+[^\W\d_]+){0,2}\.?",
                              re.IGNORECASE)
# LaTeX mathematics in running text; a $...$ span only when it holds LaTeX, since "$5 and $3" is money.
# LaTeX outside delimiters counts as one number too: \frac{1}{2}, -\sqrt{2}.
LATEX_SPAN = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]|\$\$(.+?)\$\$|(?<![\\$])\$([^$]*[\\^{][^$]*)\$"
                        r"|(-?\\(?:[dt]?frac\{[^{}]*\}\{[^{}]*\}|sqrt\{[^{}]*\}))", re.DOTALL)
LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{(.*)\}", re.DOTALL)
CHOICE = re.compile(r"\(([A-Ja-j])\)|([A-J])[.:)]?")
CHOICE_IN_TEXT = re.compile(r"\(([A-J])\)|\b(?:option|choice)\s+\(?([A-J])\b|\b([A-J])\W*$", re.IGNORECASE)
CHOICE_LEADING = re.compile(r"\s*(?:(?:option|choice)\s+)?(?:\(([A-J])\)|([A-J])(?:[.:)]|$))", re.IGNORECASE)
YES_NO = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
ARTICLES = {"a", "an", "the"}
NEGATIONS = {"not", "never", "no", "isnt", "wasnt", "nor"}
# What makes a reference an expression rather than text: LaTeX, operators, or numbers in brackets.
EXPRESSION_SIGNS = re.compile(r"[\\^=_{}+*/<>]|[(\[].*\d|\d.*[)\]]")
MATH_WORDS = {"sqrt", "sin", "cos", "tan", "log", "ln", "exp", "pi", "inf", "infty", "frac"}
BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
# The closing remarks chat models add after an answer: a sentence that starts so, to the end of the text.
COURTESY = re.compile(r"(?:^|(?<=[.!?\n]))\s*(?:let me know|i hope|hope this|feel free|if you have|is there anything|"
                      r"happy to help|good luck)\b.*\Z", re.IGNORECASE | re.DOTALL)
SHORT_ANSWER = 60  # characters: a one-line completion this short is the answer itself ("Paris", "x^2 + 1")
PARSE_SECONDS, VERIFY_SECONDS = 5, 5  # math-verify's own limits, for expressions that would take sympy too long

UNITS = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
TENS = {word: 10 * value for value, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(),
                                                      start=2)}
SCALES = {"hundred": 100, "thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9}


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


def stated_answer(text: str) -> str | None:
    """What the last "the answer is X" of a text says, up to the end of its sentence; None without one, or when it
    says what the answer is not ("the answer is not 42, it is 43" is read by its conclusion instead)."""
    statements = list(STATEMENT.finditer(text))
    if not statements:
        return None
    rest = text[statements[-1].end():]
    end = STATEMENT_END.search(rest)
    stated = KOREAN_COPULA.sub("", (rest[:end.start()] if end else rest).strip().strip("*").strip())
    words = re.findall(r"[\w']+", stated.lower())
    if not stated or (words and words[0].replace("'", "") in NEGATIONS):
        return None
    return stated


def unwrapped(text: str) -> str:
    """An answer without the LaTeX delimiters, \\text{}, quotes or emphasis around it."""
    text = text.strip()
    while True:
        before = text
        for opening, closing in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"), ("`", "`"),
                                 ('"', '"')):
            if len(text) > len(opening) + len(closing) and text.startswith(opening) and text.endswith(closing):
                text = text[len(opening):-len(closing)].strip()
        if (wrapper := LATEX_WRAPPER.fullmatch(text)) and "}" not in wrapper.group(1):
            text = wrapper.group(1).strip()
        if text == before:
            return text


def normalised(answer: str) -> str:
    """Spacing, case, surrounding $ signs, a final full stop and thousands separators do not count."""
    text = " ".join(answer.strip().strip("$").strip().rstrip(".").split()).lower()
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).replace("−", "-")


def words_of(text: str) -> list[str]:
    """The lower-cased words of a text, punctuation and articles aside: how text answers compare."""
    words = re.sub(r"[^\w\s'-]", " ", text.lower()).replace("'", "").replace("-", " ").split()
    return [word for word in words if word not in ARTICLES]


@dataclass(frozen=True)
class Number:
    value: Fraction
    percent: bool


def number_words(text: str) -> int | None:
    """The whole number a text spells out ("seventy-two", "one hundred and five"), or None."""
    words = [word for word in re.split(r"[\s-]+", text.lower().strip().rstrip(".")) if word and word != "and"]
    if not words or any(word not in UNITS and word not in TENS and word not in SCALES for word in words):
        return None
    total = current = 0
    for word in words:
        if word in UNITS or word in TENS:
            current += UNITS.get(word, 0) + TENS.get(word, 0)
        elif word == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * SCALES[word]
            current = 0
    return total + current


def as_number(answer: str) -> Number | None:
    """The number an answer is, whole: `42`, `-3.5`, `$1,000`, `\\$18`, `25%`, `3/4`, `seventy-two`; None for
    anything more ("42 apples": see number_in)."""
    text = normalised(unwrapped(answer)).replace("\\$", "").replace("\\%", "%").lstrip("$").replace(" ", "")
    percent = text.endswith("%") or text.endswith("percent")
    text = text.removesuffix("%").removesuffix("percent")
    if WHOLE_NUMBER.fullmatch(text):
        numerator, _, denominator = text.partition("/")
        if denominator and int(denominator) == 0:
            return None
        value = Fraction(numerator) / Fraction(denominator) if denominator else Fraction(numerator)
        return Number(value, percent)
    spelled = number_words(answer)
    return Number(Fraction(spelled), False) if spelled is not None else None


def numbers_in(text: str) -> list[tuple[int, str]]:
    """(position, text) of each number and LaTeX span of a text, in order; a number inside a span counts as the span.
    A hyphen between two words or numbers ("3-5", "COVID-19") is no minus sign."""
    spans = [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in LATEX_SPAN.finditer(text)]
    found = [(start, inner) for start, _, inner in spans]
    for match in NUMBER.finditer(text):
        start, token = match.start(), match.group()
        if token[0] in "-−" and start > 0 and (text[start - 1].isalnum() or text[start - 1] in ")]}"):
            start, token = start + 1, token[1:]
        if not any(s <= start < e for s, e, _ in spans):
            found.append((start, token))
    return sorted(found)


def number_in(answer: str) -> Number | str | None:
    """The number an answer gives: the answer itself, else what follows its last `=`, else (as LaTeX, for math-verify)
    that text when it holds LaTeX, else its first number ("42 apples", "3 + 4 = 7", "43, not 42")."""
    tail = answer.rsplit("=", 1)[-1].strip()
    for text in (answer, tail):
        number = as_number(text)
        if number is not None:
            return number
    if "\\" in tail:
        return tail
    found = numbers_in(tail)
    return as_number(found[0][1].replace("−", "-")) if found else None


def number_text(number: Number) -> str:
    """A number as math-verify reads it (3/4, -2)."""
    value = number.value / 100 if number.percent else number.value
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def same_number(answer: Number, reference: Number, tolerance: float) -> bool:
    """An integer reference is matched exactly; another number within `tolerance`, relative to the reference (absolute
    below 1). A percentage equals its own number and its hundredth."""
    def close(value: Fraction, expected: Fraction) -> bool:
        if expected.denominator == 1:
            return value == expected
        return abs(value - expected) <= Fraction(tolerance) * max(1, abs(expected))

    return (close(answer.value, reference.value)
            or (answer.percent and not reference.percent and close(answer.value / 100, reference.value))
            or (reference.percent and not answer.percent and close(answer.value, reference.value / 100)))


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


def choice_letter(answer: str) -> str | None:
    """The option letter an answer gives: `B`, `(B)`, `B.`, `B) 42`, `option B`, `b`; None for "A cat"."""
    text = unwrapped(answer)
    match = CHOICE_LEADING.match(text)
    if match is None:
        return None
    letter = match.group(1) or match.group(2)
    return letter.upper() if letter.isupper() or match.group(1) or len(text) <= 2 else None


def yes_or_no(answer: str) -> str | None:
    """"yes" or "no": what an answer's last word says, else its last sentence's first word, else its first word."""
    words = re.findall(r"[\w']+", answer.lower())
    first_of_last = re.findall(r"[\w']+", last_sentence(answer).lower())[:1]
    for word in [*words[-1:], *first_of_last, *words[:1]]:
        if word in YES_NO:
            return YES_NO[word]
    return None


@dataclass(frozen=True)
class Reference:
    """One accepted answer, with its kind, which says how a completion is read against it."""
    text: str
    kind: str  # number, choice, yes_no, expression or text
    number: Number | None = None


def latex_number(text: str) -> Number | None:
    """The rational number a LaTeX answer is (`\\frac{1}{2}`, `-\\dfrac{6}{4}`), by math-verify; None for anything else
    (`\\sqrt{2}`, `x^2`)."""
    import sympy

    values = parsed(text)
    if values and isinstance(values[0], sympy.Rational):
        return Number(Fraction(int(values[0].p), int(values[0].q)), False)
    return None


def is_expression(text: str) -> bool:
    """`x^2+1`, `\\frac{1}{2}`, `(1, 2)`, `[0, 1)`, `2x`, `sqrt(2)`; not `Paris` or `World War 2`."""
    if EXPRESSION_SIGNS.search(text):
        return True
    words = [word for word in re.findall(r"[^\W\d_]{2,}", text) if word.lower() not in MATH_WORDS]
    return not words


@functools.lru_cache(maxsize=4096)
def reference_of(answer: str) -> Reference:
    """An accepted answer and its kind: a number, an option letter, yes or no, an expression, else text."""
    text = unwrapped(answer)
    number = as_number(text)
    if number is None and (with_unit := NUMBER_WITH_UNIT.fullmatch(text.strip())):
        number = as_number(with_unit.group(1) + ("%" if with_unit.group(2) else ""))
    if number is None and "\\" in text:
        number = latex_number(text)
    if number is not None:
        return Reference(text, "number", number)
    if CHOICE.fullmatch(text.strip()):
        return Reference(text, "choice")
    if normalised(text).rstrip("!") in YES_NO:
        return Reference(text, "yes_no")
    return Reference(text, "expression" if is_expression(text) else "text")


def last_sentence(text: str) -> str:
    sentences = [part for part in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if part.strip()]
    return sentences[-1] if sentences else ""


def is_short(text: str) -> bool:
    return "\n" not in text.strip() and len(text.strip()) <= SHORT_ANSWER


def without_courtesies(text: str) -> str:
    """A completion without the closing remarks chat models add after their answer ("Let me know if ...")."""
    while (match := COURTESY.search(text)) and match.start() > 0:
        text = text[:match.start()]
    return text


def unmarked_answer(text: str, kind: str) -> str | None:
    """How a completion with no marked or stated answer is read, by the kind of answer it should give: a number in
    bold ("**$18**") is the one it stresses, else its last one."""
    text = without_courtesies(text)
    if kind == "number":
        stressed = [inner for inner in BOLD.findall(text) if as_number(inner) is not None]
        if stressed:
            return stressed[-1]
        found = numbers_in(text)
        if found:
            return found[-1][1]
        return text.strip() if is_short(text) else None  # "seventy-two"
    if kind == "choice":
        if is_short(text) and choice_letter(text):
            return text.strip()
        mentions = list(CHOICE_IN_TEXT.finditer(text.strip()))
        return next(letter for letter in mentions[-1].groups() if letter) if mentions else None
    if kind == "yes_no" or is_short(text):
        return text.strip() or None
    if kind == "expression":
        spans = [inner for start, inner in numbers_in(text) if LATEX_SPAN.match(text, start)]
        if spans:
            return spans[-1]
        sentence = last_sentence(text).rstrip(".")
        return sentence.rsplit("=", 1)[1].strip() if "=" in sentence else sentence
    return last_sentence(text)


def read_answer(completion: str, reference: Reference) -> str | None:
    """What a completion answers, read for a reference of this kind (the module docstring's three rules)."""
    marked = marked_answer(completion)
    if marked is not None:
        return stated_answer(marked) or marked
    stated = stated_answer(completion)
    if stated is not None:
        return stated
    return unmarked_answer(completion, reference.kind)


def text_matches(answer: str, reference: str) -> bool:
    """The same words, the same first clause ("Paris, the capital"), or an answer that ends with the reference's words
    ("The capital is Paris.") without negating them ("not Paris"; "Paris, not Lyon" answers Paris)."""
    expected = words_of(reference)
    if not expected:
        return False
    if words_of(answer) == expected or words_of(re.split(r"[,;:(]|\s[-–—]\s", answer, maxsplit=1)[0]) == expected:
        return True
    words = words_of(re.sub(r",?\s*(?:and |but )?not [^,.;]*[.!]?\s*$", "", answer, flags=re.IGNORECASE))
    start = len(words) - len(expected)
    return start > 0 and words[start:] == expected and words[start - 1] not in NEGATIONS


def squeezed(answer: str) -> str:
    return re.sub(r"\s", "", normalised(answer))


def expression_sides(answer: str, reference: str) -> list[str]:
    """What of an answer may be the expression: all of it, what follows its last `=`, and for a reference in brackets
    (a tuple or an interval) the answer's last bracketed group ("the vertex is at (0.5, -1)")."""
    sides = [answer]
    if "=" in answer:
        sides.append(answer.rsplit("=", 1)[1].strip())
    spans = [inner for start, inner in numbers_in(answer) if LATEX_SPAN.match(answer, start)]
    sides += spans[-1:]
    if reference.removeprefix("\\left").startswith(("(", "[")):
        sides += re.findall(r"[(\[][^()\[\]]*[)\]]", answer)[-1:]
    if " is " in answer:
        sides.append(answer.rsplit(" is ", 1)[1].strip())
    return list(dict.fromkeys(sides))


def same_answer(answer: str | None, reference: str | Reference | None, tolerance: float = 1e-6) -> bool:
    """Whether `answer` (already read from a completion) is `reference`, by the reference's kind (the module
    docstring's comparisons)."""
    if not answer or not reference:
        return False
    reference = reference if isinstance(reference, Reference) else reference_of(reference)
    if normalised(answer) == normalised(reference.text):
        return True
    if reference.kind == "number":
        number = number_in(unwrapped(answer))
        if isinstance(number, str):
            return equivalent(number_text(reference.number), number)
        return number is not None and same_number(number, reference.number, tolerance)
    if reference.kind == "choice":
        return choice_letter(answer) == choice_letter(reference.text)
    if reference.kind == "yes_no":
        return yes_or_no(answer) == yes_or_no(reference.text)
    if reference.kind == "expression":
        return any(equivalent(reference.text, side) or squeezed(side) == squeezed(reference.text)
                   for side in expression_sides(unwrapped(answer).rstrip("."), reference.text))
    return text_matches(answer, reference.text)


def reference_answer(reference: str) -> str | None:
    """The answer a reference holds: its marked answer, else the whole text; None when it is empty."""
    marked = marked_answer(reference)
    text = (marked if marked is not None else reference).strip()
    return text or None


def accepted_answers(value) -> list[str]:
    """The accepted answers of one reference value (a dataset cell): a text or number, a conversation whose last
    assistant turn answers, or a list of them; each read by reference_answer; none when it is empty."""
    values = value if isinstance(value, (list, tuple)) and not is_message_list(value) else [value]
    return [answer for item in values if (text := answer_text(item)) and (answer := reference_answer(text))]


def answer_matches(completion: str, references: list[str], tolerance: float = 1e-6) -> bool:
    """Whether a completion gives one of the accepted answers (reference texts, each read by reference_answer)."""
    for text in references:
        expected = reference_answer(text)
        if expected is None:
            continue
        reference = reference_of(expected)
        if same_answer(read_answer(completion, reference), reference, tolerance):
            return True
    return False


# math-verify reports each expression it cannot read as a warning; a wrong answer is an ordinary outcome here.
logging.getLogger("math_verify").setLevel(logging.ERROR)
