"""The evaluation people report for answer-checked data: K completions per held-out prompt, each graded by the grader
answer_match trains with (grpo_tool/answers.py), and three figures per prompt, averaged over the prompts:

- pass@1: the chance that one sample is right, estimated without bias from the K samples (c right of K: c / K);
- pass@K: the chance that at least one of K samples is right; from exactly K samples, whether any was right;
- maj@K: whether the answer most samples agree on is right. Answers vote together when the grader calls them the same
  answer ("42", "42.0" and "\\\\boxed{42}" are one vote), samples without a readable answer do not vote, and a tie
  between the largest groups scores the share of them that are right (what a fair coin between them would score on
  average: deterministic, and no tie-breaking rule favours the first or the right one).

pass@k for k < n is 1 - C(n - c, k) / C(n, k) (Chen et al., 2021: the unbiased estimator from n samples).

    assert pass_at_k(4, 1, 1) == 0.25 and pass_at_k(4, 1, 2) == 0.5 and pass_at_k(4, 0, 4) == 0.0
    assert majority_score([("7", True), ("8", False), ("7.0", True)]) == 1.0
    assert majority_score([("7", True), ("8", False)]) == 0.5    # a tie: one of two groups is right
    assert group_scores([("7", True), ("8", False), ("8", False), (None, False)], 4) == {
        "pass@1": [0.25], "pass@4": [1.0], "maj@4": [0.0]}
"""

from __future__ import annotations

from dataclasses import dataclass

from grpo_tool.answers import accepted_answers, answer_matches, read_answer, reference_answer, reference_of, same_answer
from grpo_tool.metrics import PASS_AT_ONE, majority_name, pass_name
from grpo_tool.reward_config import reference_column


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k samples drawn from n (c of them right) is right."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    none_right = 1.0
    for i in range(k):  # C(n - c, k) / C(n, k) as a product, exact for any n
        none_right *= (n - c - i) / (n - i)
    return 1.0 - none_right


def majority_score(votes: list[tuple[str | None, bool]], tolerance: float = 1e-6) -> float:
    """maj@K of one prompt from (answer read from a sample, whether the sample is right) pairs."""
    groups: list[list] = []  # [first answer, votes, right]
    for answer, right in votes:
        if not answer:
            continue
        for group in groups:
            if same_answer(answer, group[0], tolerance):
                group[1] += 1
                break
        else:
            groups.append([answer, 1, right])
    if not groups:
        return 0.0
    most = max(group[1] for group in groups)
    leaders = [group for group in groups if group[1] == most]
    return sum(group[2] for group in leaders) / len(leaders)


def group_scores(verdicts: list[tuple[str | None, bool | None]], k: int, tolerance: float = 1e-6
                 ) -> dict[str, list[float]]:
    """Per prompt, pass@1, pass@K and maj@K from its K consecutive (answer, right) verdicts; a prompt without a
    reference (right is None) has no score."""
    scores: dict[str, list[float]] = {name: [] for name in metric_names(k)}
    for start in range(0, len(verdicts) - k + 1, k):
        group = verdicts[start:start + k]
        if any(right is None for _, right in group):
            continue
        right = sum(bool(right) for _, right in group)
        scores[PASS_AT_ONE].append(pass_at_k(k, right, 1))
        if k > 1:
            scores[pass_name(k)].append(pass_at_k(k, right, k))
        scores[majority_name(k)].append(majority_score(group, tolerance))
    return scores


def metric_names(k: int) -> list[str]:
    """What an evaluation with K samples per prompt logs (pass@1 once when K is 1)."""
    return list(dict.fromkeys([PASS_AT_ONE, pass_name(k), majority_name(k)]))


def checks_answers(components: list) -> bool:
    """Whether a run checks answers: answer_match among its reward components."""
    return any(component.name == "answer_match" for component in components)


def held_out_names(components: list, k: int) -> list[str]:
    """The pass@ and maj@ metrics a run logs: those of a run that checks answers."""
    return metric_names(k) if checks_answers(components) else []


def answer_check_for(components: list, settings: dict, columns: list[str]) -> AnswerCheck | None:
    """How evaluations grade answers (`settings`: the reward config's answer_match section), or None when the run
    does not check answers or the evaluation rows hold no reference."""
    if not checks_answers(components):
        return None
    column = reference_column(settings, columns)
    return AnswerCheck(column, settings["tolerance"]) if column in columns else None


@dataclass(frozen=True)
class AnswerCheck:
    """How a run checks answers: the reference column answer_match reads and its tolerance."""
    column: str
    tolerance: float = 1e-6

    def verdict(self, completion: str, reference) -> tuple[str | None, bool | None]:
        """(the answer the completion gives, whether it is right); right is None when the row has no reference."""
        accepted = accepted_answers(reference)
        if not accepted:
            return None, None
        expected = reference_answer(accepted[0])
        answer = read_answer(completion, reference_of(expected)) if expected else None
        return answer, answer_matches(completion, accepted, self.tolerance)
