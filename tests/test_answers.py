"""Answer checking on literal completions: reading the final answer, comparing it with the reference, and the
answer_match and format components built on that."""

import pytest

from grpo_tool.answers import final_answer, reference_answer, same_answer
from grpo_tool.reward_config import load_reward_config
from rewards import make_answer_match_reward, make_format_reward, rule_components

ANSWER_MATCH = {"reference_column": None, "tolerance": 1e-6}


@pytest.mark.parametrize("completion, expected", [
    ("Adding them gives 12 + 15 = 27.\n#### 27", "27"),
    ("The area is \\boxed{\\frac{1}{2}} square units.", "\\frac{1}{2}"),
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4"),                      # the last one counts
    ("<think>6 * 7</think><answer>42</answer>", "42"),
    ("<answer>The result is \\boxed{x^2 + 1}</answer>", "x^2 + 1"),             # marks are looked into
    ("So she has 3 apples, then 5 more, 8 in all.", "8"),                        # unmarked: the last number
    ("It costs $1,250.50 in total.", "1,250.50"),
    ("I do not know.", None),
    ("\\boxed{\\frac{1}{3", "3"),                                               # a box cut off is no answer
])
def test_final_answer(completion, expected):
    assert final_answer(completion) == expected


@pytest.mark.parametrize("reference, expected", [
    ("Natalia sold 48 / 2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),      # GSM8K's worked answer
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
    ("42.0001", "42", False),              # beyond the default tolerance
    ("x^2", "x^2+1", False),
    (None, "42", False),
])
def test_same_answer(answer, reference, same):
    assert same_answer(answer, reference) is same


def test_tolerance_is_relative():
    assert same_answer("3.1416", "3.14159", tolerance=1e-4)
    assert not same_answer("3.1416", "3.14159", tolerance=1e-6)
    assert same_answer("1000001", "1000000", tolerance=1e-6)


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
