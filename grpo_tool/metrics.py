"""The names of the metrics a run logs, in one place: TRL's and ours, what each means, and how an evaluation's and a
reward component's are spelled. The console line, the alarms, the report, the choice of the best checkpoint and the
README's table read them from here.

    assert evaluation(REWARD) == "eval_reward" and component_mean("accuracy") == "rewards/accuracy/mean"
    assert best_metric("eval_base_nll", []) == (BASE_NLL, False)
"""

from __future__ import annotations

from grpo_tool.errors import UserError, near_miss

EVAL_PREFIX = "eval_"  # what transformers puts before every metric an evaluation logs

# TRL's, per logging step and per evaluation.
REWARD = "reward"
REWARD_STD = "reward_std"
FLAT_GROUPS = "frac_reward_zero_std"
LOSS = "loss"
LEARNING_RATE = "learning_rate"
GRAD_NORM = "grad_norm"  # transformers'
KL = "kl"
ENTROPY = "entropy"
MEAN_LENGTH = "completions/mean_length"
CLIPPED_RATIO = "completions/clipped_ratio"
LENGTHS = ("completions/min_length", "completions/max_length", "completions/mean_terminated_length",
           "completions/min_terminated_length", "completions/max_terminated_length")
# Ours, per training step (grpo_tool/trainer_hooks.StepRecords, grpo_tool/alarms.completion_shapes).
IDENTICAL_GROUPS = "completions/identical_groups"
REPETITIVE = "completions/repetitive"
# TRL's, when the run has tools (grpo_tool/tools.py).
TOOL_CALLS = "tools/call_frequency"
TOOL_FAILURES = "tools/failure_frequency"
# Ours, at evaluations (grpo_tool/base_view.py): how the completions look to the model training started from.
BASE_NLL = "base_nll"
BASE_DRIFT = "base_drift"

# Ours, per training step, when zero_variance_groups or the curriculum is on (grpo_tool/group_choice.py).
GROUPS_FLAT = "groups/flat"
GROUPS_DROPPED = "groups/dropped"
GROUPS_RESAMPLED = "groups/resampled"
EXTRA_COMPLETIONS = "groups/extra_completions"
GROUPS_SWAPPED = "groups/swapped"
RESTING = "curriculum/resting_{kind}"

# Ours, at evaluations of answer-checked data (grpo_tool/held_out.py), K being eval_samples.
PASS_AT_ONE = "pass@1"

EVAL_REWARD = EVAL_PREFIX + REWARD
EVAL_BASE_NLL = EVAL_PREFIX + BASE_NLL
EVAL_BASE_DRIFT = EVAL_PREFIX + BASE_DRIFT

# What each means, for the README's table (tests/test_readme.py holds the two together).
MEANINGS = {
    REWARD: "the weighted total reward, mean over the step's completions",
    REWARD_STD: "its standard deviation over all the step's completions, all prompts together (TRL's; the spread "
                "within groups, which GRPO learns from, is what flat groups counts)",
    FLAT_GROUPS: "share of groups whose completions all scored the same (no learning signal)",
    "rewards/NAME/mean": "each reward component's mean score",
    "rewards/NAME/missing": "share of completions a component left unscored (None)",
    "rewards/NAME/all_missing": "share of batches in which a component scored nothing",
    MEAN_LENGTH: "completion length in tokens (also min, max, and of those that ended)",
    CLIPPED_RATIO: "share of completions cut off at max_completion_length",
    IDENTICAL_GROUPS: "share of groups whose completions are all the same, token for token (sampling near greedy, "
                      "or a collapsed policy)",
    REPETITIVE: "share of completions of 8 tokens or more that loop over a few tokens (at most a quarter of their "
                "tokens distinct)",
    KL: "KL divergence to the reference model (when beta > 0)",
    ENTROPY: "mean token entropy of the policy (not logged for a step with no token in its loss, such as one whose "
             "groups were all dropped)",
    LOSS: "the GRPO loss",
    LEARNING_RATE: "the learning rate",
    GRAD_NORM: "the gradient norm before clipping",
    GROUPS_FLAT: "share of the step's own groups that were flat, before anything was done about them",
    GROUPS_DROPPED: "groups left out of the loss (zero_variance_groups drop, or resample when rounds ran out)",
    GROUPS_RESAMPLED: "groups with signal from fresh prompts that took flat groups' places (resample)",
    EXTRA_COMPLETIONS: "completions generated beyond the step's own to find them (resample)",
    GROUPS_SWAPPED: "prompts the curriculum swapped out of the step because they rest",
    RESTING.format(kind="solved"): "prompts resting because their whole group scored the run's highest reward",
    RESTING.format(kind="hopeless"): "prompts resting because their whole group scored the run's lowest reward",
    TOOL_CALLS: "with tools: tool calls per completion (a completion may make several)",
    TOOL_FAILURES: "with tools: share of tool calls that failed (the tool raised or timed out, an unknown tool, "
                   "arguments it does not take)",
    BASE_NLL: "at evaluations: the starting model's loss per token on the completions",
    BASE_DRIFT: "at evaluations: how far the current model has moved from the starting one",
    PASS_AT_ONE: "at evaluations of answer-checked data: the chance one sample is right (unbiased, from K samples per "
                 "prompt)",
    "pass@K": "the chance at least one of K samples is right (K: eval_samples)",
    "maj@K": "whether the answer most of the K samples give is right (ties share the credit)",
}

# What an evaluation logs, without its prefix: the names --metric-for-best-model takes besides a reward's name.
EVAL_METRICS = (REWARD, REWARD_STD, LOSS, BASE_NLL, BASE_DRIFT, FLAT_GROUPS, ENTROPY, KL, MEAN_LENGTH, CLIPPED_RATIO,
                *LENGTHS, TOOL_CALLS, TOOL_FAILURES)
LOWER_IS_BETTER = ("nll", "drift", "loss", "failure_frequency")  # endings of metrics where less is better


def evaluation(metric: str) -> str:
    """The name an evaluation logs `metric` under."""
    return EVAL_PREFIX + metric


def pass_name(k: int) -> str:
    return f"pass@{k}"


def majority_name(k: int) -> str:
    return f"maj@{k}"


def held_out_keys(keys) -> list[str]:
    """The evaluation metrics among `keys` that are pass@N or maj@N (eval_pass@1, ...), in order, each once."""
    def held_out(key: str) -> bool:
        head, _, number = key.removeprefix(EVAL_PREFIX).partition("@")
        return head in ("pass", "maj") and number.isdigit() and int(number) >= 1

    return list(dict.fromkeys(key for key in keys if key.startswith(EVAL_PREFIX) and held_out(key)))


def resting(kind: str) -> str:
    """curriculum/resting_solved or curriculum/resting_hopeless."""
    return RESTING.format(kind=kind)


def component_mean(name: str) -> str:
    return f"rewards/{name}/mean"


def component_share(name: str, kind: str) -> str:
    """rewards/NAME/missing or rewards/NAME/all_missing (see grpo_tool/reward_guard.py)."""
    return f"rewards/{name}/{kind}"


def best_metric(name: str | None, components: list, held_out: list[str] = ()) -> tuple[str, bool] | None:
    """(TRL's metric_for_best_model, greater_is_better) for --metric-for-best-model: a reward function's name means
    its mean score; otherwise a metric an evaluation logs, with or without its eval_ prefix; `held_out` are the
    pass@ and maj@ names this run logs (grpo_tool/held_out.py). Checked here, since transformers would only find a
    wrong name at the first evaluation."""
    if name is None:
        return None
    names = [c.name for c in components]
    if name in names:
        return component_mean(name), True
    metric = name.removeprefix(EVAL_PREFIX)
    per_function = {f"rewards/{n}/{kind}" for n in names for kind in ("mean", "std")}
    if metric in EVAL_METRICS or metric in per_function or metric in held_out:
        return metric, not metric.endswith(LOWER_IS_BETTER)
    head = metric.partition("@")[0]
    if head in ("pass", "maj") and not held_out:
        raise UserError(f"metric_for_best_model={name!r}: pass@ and maj@ are measured on answer-checked data, and "
                        "this run does not check answers (add answer_match to its rewards, as the math preset does)")
    if head in ("pass", "maj"):
        raise UserError(f"metric_for_best_model={name!r}: this run's evaluations log {', '.join(held_out)} "
                        "(K is eval_samples)")
    raise UserError(f"metric_for_best_model={name!r}{near_miss(name, names + list(EVAL_METRICS))}: give a reward "
                    f"function's name ({', '.join(names)}) or a metric an evaluation logs "
                    f"({', '.join([*EVAL_METRICS, *held_out])}, rewards/NAME/mean), with or without eval_")
