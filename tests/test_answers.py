"""Answer checking on literal completions: reading the final answer, comparing it with the reference, and the
answer_match and format components built on that."""

import pytest
from fixtures import graded_answers

from grpo_tool.answers import Reference, answer_matches, read_answer, reference_answer, reference_of, same_answer
from grpo_tool.reward_config import load_reward_config
from rewards import make_answer_match_reward, make_format_reward, rule_components

ANSWER_MATCH = {"reference_column": None, "tolerance": 1e-6}


# A graded corpus: (completion, reference or accepted references, whether a careful grader calls it right), across
# the kinds of answer GRPO data holds; tests/fixtures/graded_answers.py holds 401 more, written by people who did not
# see the grader. Reading every unmarked completion by its last number, the grader before this one agreed on 102 of
# these 149 and on 288 of those 401.
GRADED = [
    # numbers, marked and unmarked
    ("Adding them gives 12 + 15 = 27.\n#### 27", "27", True),
    ("So she has 3 apples, then 5 more, 8 in all.", "8", True),
    ("So she has 3 apples, then 5 more, 8 in all.", "9", False),
    ("The answer is 42. I checked it in 3 steps.", "42", True),
    ("The answer is 42. I checked it in 3 steps.", "3", False),
    ("42", "42", True),
    ("42.0", "42", True),
    ("41.99", "42", False),
    ("1000001", "1000000", False),
    ("#### 1,000,000", "1000000", True),
    ("The result is 7.", "#### 7", True),
    ("The stall sold 48 kites on Saturday and 24 on Sunday, 72 in all.",
     "It sold 48/2 = <<48/2=24>>24 kites on Sunday.\n#### 72", True),
    ("The stall sold 48 kites on Saturday and 24 on Sunday.", "It sold 48/2 = <<48/2=24>>24 kites on Sunday.\n#### 72",
     False),
    ("First I thought 12, but 5 + 9 = 14.", "12", False),
    ("First I thought 12, but 5 + 9 = 14.", "14", True),
    ("The answer is: **42**", "42", True),
    ("**Final Answer:** 42", "42", True),
    ("Final Answer: The final answer is 18. I hope it is correct.", "18", True),
    ("The answer is 43, not 42.", "42", False),
    ("The answer is 43, not 42.", "43", True),
    ("The answer is not 42; it is 43.", "42", False),
    ("The answer is not 42; it is 43.", "43", True),
    ("x = 5", "5", True),
    ("We get x = 5, so 2x = 10.", "10", True),
    ("We get x = 5, so 2x = 10.", "5", False),
    ("The answer is 2 + 2 = 4", "4", True),
    ("seventy-two", ["72", "seventy-two"], True),
    ("seventy-two", "72", True),
    ("The answer is seventy two.", "72", True),
    ("Seventy-one", "72", False),
    ("12 + 15 = 27, so #### 27", "26", False),
    ("The answer is 12.5 hours.", "12.5", True),
    ("I don't know.", "42", False),
    ("", "42", False),
    ("<answer>3 + 4 = 7</answer>", "7", True),
    ("Each box holds 6, and 4 boxes hold 24 eggs.", "24", True),
    # money and thousands separators
    ("It costs $1,250.50 in total.", "1250.5", True),
    ("She pays $18 every day.", "18", True),
    ("The total is \\$18.", "$18", True),
    ("#### $1,000", "1000", True),
    ("The answer is 1,000 dollars.", "1000", True),
    ("She earns $1,200 a month, so 12 months give $14,400.", "14400", True),
    ("She earns $1,200 a month, so 12 months give $14,400.", "1200", False),
    ("#### 18", "18 dollars", True),
    ("The answer is $5.", "5.00", True),
    ("He saved $1,500.", "$1,050", False),
    ("#### 14,400", "14400", True),
    # negative numbers
    ("The temperature drops to -5 degrees.", "-5", True),
    ("#### \u22127", "-7", True),
    ("#### 7", "-7", False),
    ("#### -7", "7", False),
    ("It is one of pages 3-5, so 5.", "5", True),
    ("The change is -12.5%.", "-12.5%", True),
    ("x = -3", "-3", True),
    ("The balance is $(-40)$ dollars.", "-40", True),
    # fractions and decimals
    ("The answer is 1/2", "\\frac{1}{2}", True),
    ("The area is \\boxed{\\frac{1}{2}} square units.", "0.5", True),
    ("So the probability is 3/4.", "0.75", True),
    ("So the probability is 3/4.", "3", False),
    ("The probability is $\\frac{1}{3}$.", "1/3", True),
    ("The answer is 0.333", "1/3", False),
    ("\\boxed{3.14}", "3.14159", False),
    ("#### 2.50", "2.5", True),
    ("#### .5", "0.5", True),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", True),
    ("\\boxed{\\frac{2}{3}}", "\\frac{3}{4}", False),
    ("The answer is 0.75", "3/4", True),
    # percentages
    ("The discount is 25%.", "25", True),
    ("The discount is 25%.", "0.25", True),
    ("#### 0.25", "25%", True),
    ("The discount is 20%.", "25%", False),
    ("The answer is 50 percent.", "50%", True),
    ("\\boxed{25\\%}", "25", True),
    ("\\boxed{40\\%}", "25", False),
    # symbolic expressions
    ("x^2+1", "x^2+1", True),
    ("1+x^2", "x^2+1", True),
    ("The derivative is $2x + 1$.", "2x+1", True),
    ("The derivative is $2x$.", "2x+1", False),
    ("\\boxed{\\sqrt{18}}", "3\\sqrt{2}", True),
    ("Expanding, $(x+1)^2 = x^2 + 2x + 1$.", "x^2+2x+1", True),
    ("After simplifying, f(x) = x^2 - 1", "x^2-1", True),
    ("\\boxed{x^2}", "x^2+1", False),
    ("The answer is $\\pi/2$.", "\\frac{\\pi}{2}", True),
    ("The answer is $2\\pi$.", "\\pi", False),
    ("\\boxed{2x + 3}", "3 + 2x", True),
    ("\\boxed{x = 4}", "4", True),
    # intervals and tuples
    ("(1, 2)", "(1,2)", True),
    ("The solution set is $[0, 1)$.", "[0,1)", True),
    ("The solution set is $[0, 1]$.", "[0,1)", False),
    ("\\boxed{(2, 1)}", "(1, 2)", False),
    ("The point is $(3, -4)$.", "(3,-4)", True),
    ("The point is $(3, 4)$.", "(3,-4)", False),
    ("\\boxed{(-\\infty, 2]}", "(-\\infty,2]", True),
    # multiple choice
    ("(B)", "B", True),
    ("B", "B", True),
    ("The answer is (C).", "C", True),
    ("The answer is (C).", "B", False),
    ("I think option B is right at first... Actually (D).", "D", True),
    ("I think option B is right at first... Actually (D).", "B", False),
    ("Looking at the options, (A) is too small and (C) too large, so B.", "B", True),
    ("Looking at the options, (A) is too small and (C) too large, so B.", "A", False),
    ("<answer>B) 42</answer>", "B", True),
    ("**Answer: D**", "D", True),
    ("A cat sat on a mat.", "A", False),
    ("\\boxed{C}", "(C)", True),
    ("The answer is b", "B", True),
    ("I first guessed (A), but the answer is (C).", "A", False),
    # yes and no
    ("Yes", "yes", True),
    ("No.", "yes", False),
    ("Yes, 7 is prime: it has no divisors besides 1 and 7.", "yes", True),
    ("7 has no divisors besides 1 and itself, so yes.", "Yes", True),
    ("No, 9 = 3 * 3.", "no", True),
    ("The answer is no.", "yes", False),
    ("True.", "true", True),
    ("False", "true", False),
    ("<answer>yes</answer>", "No", False),
    ("Some say yes, but the answer is no.", "yes", False),
    ("Some say yes, but the answer is no.", "no", True),
    # text
    ("Paris", "Paris", True),
    ("paris.", "Paris", True),
    ("The capital of France is Paris.", "Paris", True),
    ("Lyon", "Paris", False),
    ("Sydney is the largest city, but the capital of Australia is Canberra.", "Sydney", False),
    ("Sydney is the largest city, but the capital of Australia is Canberra.", "Canberra", True),
    ("Not Paris.", "Paris", False),
    ("The answer is Lyon, not Paris.", "Paris", False),
    ("The answer is Lyon, not Paris.", "Lyon", True),
    ("the Eiffel Tower", "Eiffel Tower", True),
    ("<answer>George Washington</answer>", "George Washington", True),
    ("<answer>Washington</answer>", "George Washington", False),
    ("The chemical symbol for gold is Au.", "Au", True),
    ("The chemical symbol for gold is Ag.", "Au", False),
    ("Paris is lovely, but the answer is London.", "Paris", False),
    ("Paris is lovely, but the answer is London.", "London", True),
    ("Sirap", "Paris", False),
    # accepted lists
    ("The answer is NYC.", ["New York City", "NYC"], True),
    ("\\boxed{0.5}", ["1/2", "0.5"], True),
    ("#### 3", ["2", "4"], False),
    ("It is the Pacific Ocean.", ["Pacific", "Pacific Ocean"], True),
    ("Atlantic", ["Pacific", "Pacific Ocean"], False),
    # a conclusion beside a mention
    ("42 is tempting, but <answer>41</answer>", "42", False),
    ("Is it 6? No: 2 * 4 = 8. #### 8", "6", False),
    ("The answer might look like 12, but the answer is 15.", "12", False),
    ("The answer might look like 12, but the answer is 15.", "15", True),
    ("<think>The answer is 5.</think><answer>6</answer>", "5", False),
    ("\\boxed{3} was wrong, so \\boxed{4}", "3", False),
    ("\\boxed{3} was wrong, so \\boxed{4}", "4", True),
    # the original's users write Korean
    ("정답은 42입니다.", "42", True),
    ("답: 7", "8", False),
]


# The one known disagreement: math-verify reads `c + ab` as the unfinished `c +` (it drops a lone c after another
# term, as in `a + c`), so the two are not found equivalent.
@pytest.mark.parametrize("completion, reference, right", [
    pytest.param(*case, marks=[pytest.mark.xfail(strict=True, reason="math-verify misreads it")]
                 if case[:2] == ("a*b + c", "c + ab") else []) for case in GRADED + graded_answers.CASES])
def test_graded_corpus(completion, reference, right):
    references = reference if isinstance(reference, list) else [reference]
    assert answer_matches(completion, references) is right


def test_the_corpus_covers_every_kind_of_reference():
    kinds = {reference_of(reference_answer(r)).kind for _, refs, _ in GRADED
             for r in (refs if isinstance(refs, list) else [refs])}
    assert kinds == {"number", "choice", "yes_no", "expression", "text"}
    assert len(GRADED) >= 100 and sum(right for *_, right in GRADED) < len(GRADED)


@pytest.mark.parametrize("completion, kind, expected", [
    ("Adding them gives 12 + 15 = 27.\n#### 27", "number", "27"),
    ("First \\boxed{3}, then corrected: \\boxed{4}", "number", "4"),                 # the last mark counts
    ("<answer>The result is \\boxed{x^2 + 1}</answer>", "expression", "x^2 + 1"),  # marks are looked into
    ("<answer>The answer is B</answer>", "choice", "B"),                           # and statements inside them
    ("The answer is 42. I checked it in 3 steps.", "number", "42"),
    ("The answer is not 42; it is 43.", "number", "43"),                           # a denial states nothing
    ("It costs $1,250.50 in total.", "number", "1,250.50"),
    ("The probability is $\\frac{1}{3}$ in the end.", "number", "\\frac{1}{3}"),   # a LaTeX span is one number
    ("Pages 3-5.", "number", "5"),                                                 # a hyphen is no minus sign
    ("\\boxed{\\frac{1}{3", "number", "3"),                                        # a box cut off marks nothing
    ("Paris", "text", "Paris"),
    ("It is big.\nThe capital is Paris.", "text", "The capital is Paris."),
    ("Expanding, $(x+1)^2$ and so on", "expression", "Expanding, $(x+1)^2$ and so on"),  # one short line is itself
    ("I do not know.", "number", "I do not know."),
])
def test_read_answer(completion, kind, expected):
    assert read_answer(completion, Reference("", kind)) == expected


@pytest.mark.parametrize("reference, expected", [
    ("It sold 48 / 2 = <<48/2=24>>24 kites on Sunday.\n#### 72", "72"),         # GSM8K's worked answer
    ("x^2+1", "x^2+1"),                                                          # unmarked: taken whole
    ("The answer is \\boxed{5}.", "5"),
    ("   ", None),
])
def test_reference_answer(reference, expected):
    assert reference_answer(reference) == expected


@pytest.mark.parametrize("answer, reference, same", [
    ("42", "42", True),
    ("42.0", "42", True),                  # numbers, not strings
    ("1,000", "1000", True),               # thousands separators
    ("$1,000", "1000", True),
    ("Paris.", "paris", True),             # case and a final full stop
    ("0.5", "\\frac{1}{2}", True),         # math-verify
    ("1/2", "0.5", True),
    ("\\sqrt{18}", "3\\sqrt{2}", True),
    ("1+x^2", "x^2+1", True),
    ("41", "42", False),
    ("42.0001", "42", False),
    ("x^2", "x^2+1", False),
    ("sirap", "Paris", False),             # text is never read as a product of variables
    (None, "42", False),
])
def test_same_answer(answer, reference, same):
    assert same_answer(answer, reference) is same


@pytest.mark.parametrize("reference, kind", [
    ("72", "number"), ("$1,250.50", "number"), ("18 dollars", "number"), ("25%", "number"), ("seventy-two", "number"),
    ("-3/4", "number"), ("B", "choice"), ("(c)", "choice"), ("Yes", "yes_no"), ("false", "yes_no"),
    ("x^2+1", "expression"), ("\\frac{\\pi}{2}", "expression"), ("(1, 2)", "expression"), ("2x", "expression"),
    ("sqrt(2)", "expression"), ("Paris", "text"), ("World War 2", "text"), ("A cat", "text"),
])
def test_reference_kind(reference, kind):
    assert reference_of(reference).kind == kind


def test_tolerance_is_relative_and_for_non_integers_only():
    assert same_answer("3.1416", "3.14159", tolerance=1e-4)
    assert not same_answer("3.1416", "3.14159", tolerance=1e-6)
    assert not same_answer("1000001", "1000000", tolerance=1e-3)   # an integer is exact whatever the tolerance
    assert not same_answer("42.0000001", "42")
    assert same_answer("0.3333333", "1/3")


def test_answer_match_scores_against_each_rows_reference():
    reward = make_answer_match_reward(ANSWER_MATCH)
    completions = ["So 27.", "#### 26", "<answer>27</answer>", "I think it is 12", "no idea", "anything"]
    answers = ["27", "27", "27", "12", "12", None]
    assert reward(completions, answer=answers) == [1.0, 0.0, 1.0, 1.0, 0.0, None]  # no reference: skipped


def test_answer_match_reads_chat_completions_and_other_reference_columns():
    reward = make_answer_match_reward(ANSWER_MATCH)
    chat = [[{"role": "assistant", "content": "The answer is \\boxed{2}."}]]
    assert reward(chat, solution=["Since x + 1 = 3, \\boxed{2}"]) == [1.0]        # MATH's solution column
    assert reward(chat, output=["2"], ground_truth=["9"]) == [1.0]                # the first known column wins
    assert reward(chat, ground_truth=[2]) == [1.0]                                 # numbers as references
    assert reward(chat, answer=[["two", "2"]]) == [1.0]                            # any of several answers
    assert reward(chat, chosen=["2"]) == [None]                                    # no reference column at all


def test_answer_match_reference_column_setting():
    reward = make_answer_match_reward({"reference_column": "target", "tolerance": 1e-6})
    assert reward(["#### 5", "#### 5"], answer=["5", "5"], target=["5", "6"]) == [1.0, 0.0]


def test_format_reward_exact_loose_and_missing():
    reward = make_format_reward({"tags": ["think", "answer"]})
    completions = ["<think>6 times 7</think>\n<answer>42</answer>\n",
                   "Sure! <think>6 times 7</think> so <answer>42</answer> done",
                   "<answer>42</answer><think>late</think>",
                   "<think>unfinished",
                   [{"role": "assistant", "content": "  <think>a</think><answer>b</answer>"}]]
    assert reward(completions) == [1.0, 0.5, 0.0, 0.0, 1.0]
    reasoning = make_format_reward({"tags": ["reasoning", "answer"]})
    assert reasoning(["<reasoning>r</reasoning><answer>a</answer>"]) == [1.0]


def test_presets_combine_the_answer_checking_components():
    assert [(c.name, c.weight) for c in rule_components(load_reward_config("verifiable"))] == [("answer_match", 1.0)]
    reasoning = rule_components(load_reward_config("reasoning"))
    assert [(c.name, c.weight) for c in reasoning] == [("answer_match", 1.0), ("format", 0.2)]
    # The original's balanced preset is unchanged: the answer-checking components take no part at weight 0.
    assert [c.name for c in rule_components(load_reward_config("balanced"))] == ["accuracy", "length", "quality"]
