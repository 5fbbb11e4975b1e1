"""Alarms: what in a run's figures means the run is wasting its time, said in plain words with what to change.

The alarms judge every optimizer step, whatever --logging-steps says: grpo_tool.trainer_hooks.StepRecords gathers
each step's figures (TRL's metrics of that step alone, the loss, the gradient norm, the shapes of the completions)
into one record, and grpo_tool.callbacks.AlarmCallback judges the records and the evaluations after each step. It
raises each alarm once, in the log and in {output_dir}/alarms.json (id, step, message). A history of log entries is
judged the same way, each entry standing for one step (an old run's report, which kept no step records).

Windows and thresholds are counted in steps and stated beside each alarm in the README's table; the first steps
("start") and the last ones ("recent") are START and RECENT steps long. Components are logged as
rewards/<component>/mean in both reward modes.

    steps = [{"step": s, "reward": 0.2, "completions/clipped_ratio": 0.95} for s in range(1, 6)]
    alarms = find_alarms(steps, weights={"accuracy": 0.4}, max_completion_length=256)
    assert list(alarms) == ["length_cap"]    # 95% of the completions were cut off at 256 tokens
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from grpo_tool import metrics
from grpo_tool.reward_guard import ALL_MISSING

RECENT = 5  # steps that make "recent"
START = 5  # steps that make "the start" of a run
CAPPED_SHARE = 0.8  # completions at the length cap, over the recent steps, from which on it is an alarm
# No learning signal. A run whose groups all scored alike learns nothing; one with rare signal may be warming up, so
# the window is long and a falling share of flat groups (signal growing) is no alarm.
FLAT_SHARE = 0.9  # share of a step's groups with zero reward spread that counts as no signal
FLAT_WINDOW = 20  # steps with at least FLAT_SHARE flat groups on average, the share not falling over them...
FLAT_TREND = 0.05  # ...where falling means the window's second half is this much below its first half
ALL_FLAT_STEPS = 10  # or: this many steps in a row in which every group was flat
DOMINANT_SHARE = 0.9  # share of the total reward's size from one component that counts as dominating
# Held-out scores falling while the training reward rises: the last two evaluations below the best one before them...
EVAL_FALL = 0.05  # ...both by at least this much (scores are mostly in [0, 1])...
EVAL_FALL_SHARE = 0.2  # ...and the last by at least this share of the best score
# Completions that say nothing new: groups whose completions are all the same, and loops of a few tokens.
IDENTICAL_SHARE = 0.5  # share of groups whose completions are token for token the same
REPETITIVE_SHARE = 0.5  # share of completions that loop (completion_shapes)
REPEAT_MIN_TOKENS = 8  # a completion shorter than this is not judged a loop
REPEAT_DISTINCT = 0.25  # a loop: at most this share of its tokens are distinct
CALM = 0.2  # "low at the start": the start's identical or repetitive share at most this
NEAR_GREEDY_TEMPERATURE = 0.5  # sampling below this temperature: groups turning identical are the sampling's doing
# Training collapsing or diverging.
ENTROPY_COLLAPSE = 0.2  # the recent entropy at most this share of the start's
GRAD_SPIKE = 10.0  # a recent gradient norm at least this many times the median of the steps before
SPIKE_HISTORY = 5  # steps before a spike that make its baseline
# KL to the reference (beta > 0): the recent mean over this, and this many times the start's, means it runs away.
KL_LIMIT = 0.5  # nats per token
KL_GROWTH = 10.0
# Reward hacking: the training reward rose while the answers moved away from what the starting model finds plausible.
# Set from real runs of SmolLM2-135M-Instruct (bench/reward_hacking.py, figures in the README).
# The hacked run there: reward 0.51 -> 0.75, base NLL 2.19 -> 2.89 -> 3.52 -> 3.92, drift 0.03 -> 1.35, length 42 -> 16
# tokens ("Compute 93 minus 30." -> "Scary thing."); a healthy one: reward 0.59 -> 0.88, base NLL 1.92 -> 1.81, drift
# 0.07, length 39 -> 47; the tiny quick test (a random model, whose base finds everything equally implausible):
# reward 0.05 -> 0.22, base NLL flat at 6.25, drift 0.48. Drift alone does not tell hacking from learning at these
# sizes, so its limit is high; the base model's loss rising and the length collapsing do.
REWARD_RISE = 0.1  # the recent training reward over the start's, at least
DRIFT_LIMIT = 1.0  # eval_base_drift, nats per token: how far the current model has moved from the base
NLL_RISE_LIMIT = 0.3  # eval_base_nll's rise since the first evaluation, nats per token, and at least...
NLL_RISE_SHARE = 0.15  # ...this share of the first evaluation's value
LENGTH_COLLAPSE = 0.5  # the recent mean completion length at most this share of the start's
UNSCORED_SUFFIX = f"/{ALL_MISSING}"  # rewards/<name>/all_missing: the share of batches a component scored none of
TOOL_FAILURE_SHARE = 0.5  # share of recent tool calls failing from which on it is an alarm


def train_logs(history: list[dict]) -> list[dict]:
    """The training steps (or logs) of a history that have a reward: those a generation scored."""
    return [entry for entry in history if entry.get(metrics.REWARD) is not None and metrics.EVAL_REWARD not in entry]


def eval_logs(history: list[dict]) -> list[dict]:
    return [entry for entry in history if entry.get(metrics.EVAL_REWARD) is not None]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series(entries: list[dict], key: str) -> list[float]:
    """The finite values of `key` in `entries`, in order (a step that measured nothing has none)."""
    return [entry[key] for entry in entries if finite(entry.get(key))]


def looping(ids: list[int]) -> bool:
    """A completion that repeats a few tokens over and over ("kilometres kilometres ...")."""
    return len(ids) >= REPEAT_MIN_TOKENS and len(set(ids)) <= REPEAT_DISTINCT * len(ids)


def completion_shapes(fingerprints: list[tuple[int, bool]], group_size: int) -> dict[str, float]:
    """The share of groups whose completions are all the same, and of completions that loop, from one (hash of the
    tokens, loops) pair per completion, groups being consecutive runs of `group_size`."""
    groups = [fingerprints[start:start + group_size] for start in range(0, len(fingerprints), group_size)]
    groups = [group for group in groups if len(group) == group_size]
    if not groups:
        return {}
    same = sum(len({token_hash for token_hash, _ in group}) == 1 for group in groups)
    return {metrics.IDENTICAL_GROUPS: same / len(groups),
            metrics.REPETITIVE: sum(loops for _, loops in fingerprints) / len(fingerprints)}


# The metrics the alarms read, of those TRL and the tool log at each step (with each reward's mean and all_missing).
JUDGED = (metrics.REWARD, metrics.REWARD_STD, metrics.FLAT_GROUPS, metrics.GROUPS_FLAT, metrics.GROUPS_DROPPED,
          metrics.GROUPS_RESAMPLED, metrics.EXTRA_COMPLETIONS, metrics.ENTROPY, metrics.KL, metrics.MEAN_LENGTH,
          metrics.CLIPPED_RATIO, metrics.IDENTICAL_GROUPS, metrics.REPETITIVE, metrics.TOOL_CALLS,
          metrics.TOOL_FAILURES)


def judged(key: str) -> bool:
    return key in JUDGED or key.startswith("rewards/") and key.endswith(("/mean", UNSCORED_SUFFIX))


def step_record(step: int, new: dict[str, list], losses: list[float], grad_norm: float | None) -> dict:
    """One optimizer step's figures: the mean of each judged metric TRL appended during the step (NaN, a step that
    measured nothing, left out), the step's loss (NaN or inf when any of its micro-batches had one) and gradient
    norm."""
    record: dict = {"step": step}
    for key, values in new.items():
        kept = [value for value in values if finite(value)]
        if kept and judged(key):
            record[key] = mean(kept)
    if losses:
        bad = [loss for loss in losses if not math.isfinite(loss)]
        record[metrics.LOSS] = bad[0] if bad else sum(losses)
    if grad_norm is not None:
        record[metrics.GRAD_NORM] = float(grad_norm)
    return record


def window_mean(entries: list[dict], key: str) -> float | None:
    values = series(entries, key)
    return mean(values) if values else None


def capped_completions(train: list[dict], max_completion_length: int | None) -> str | None:
    recent = train[-RECENT:]
    share = window_mean(recent, metrics.CLIPPED_RATIO)
    if len(recent) < RECENT or share is None or share < CAPPED_SHARE:
        return None
    if (window_mean(recent, metrics.REPETITIVE) or 0.0) >= REPETITIVE_SHARE:
        return None  # loops run into the cap: the cap is not what is wrong (training_collapse says what is)
    cap = f"max_completion_length={max_completion_length}" if max_completion_length else "max_completion_length"
    return (f"{share:.0%} of the completions of the last {RECENT} steps hit {cap}: answers are being cut off; raise "
            "the cap or reward answers that finish")


def eval_scores(evaluations: list[dict]) -> list[str]:
    """Every score an evaluation logs where higher is better: the reward, each reward's and --eval-reward-fn's mean,
    and pass@/maj@."""
    keys = dict.fromkeys(key for entry in evaluations for key in entry)
    per_reward = [key for key in keys if key.startswith(metrics.evaluation("rewards/")) and key.endswith("/mean")]
    return [metrics.EVAL_REWARD, *per_reward, *metrics.held_out_keys(keys)]


def train_up_eval_down(train: list[dict], evaluations: list[dict]) -> str | None:
    """A held-out score below its best at both of the last two evaluations, the last well below, while the training
    reward rose."""
    for key in eval_scores(evaluations):
        scored = [entry for entry in evaluations if finite(entry.get(key))]
        if len(scored) < 3:
            continue
        best = max(scored[:-2], key=lambda entry: entry[key])
        if not all(best[key] - entry[key] >= EVAL_FALL for entry in scored[-2:]) \
                or best[key] - scored[-1][key] < EVAL_FALL_SHARE * abs(best[key]):
            continue
        before = series([entry for entry in train if entry["step"] <= best["step"]][-RECENT:], metrics.REWARD)
        recent = series(train[-RECENT:], metrics.REWARD)
        if not before or not recent or mean(recent) <= mean(before):
            continue
        name = key.removeprefix(metrics.EVAL_PREFIX)
        return (f"the training reward rose ({mean(before):.3f} -> {mean(recent):.3f}) while the held-out {name} fell "
                f"from {best[key]:.3f} at step {best['step']} to {scored[-1][key]:.3f} at step {scored[-1]['step']}: "
                "the model is learning something the held-out score does not reward (gaming the training reward, or "
                "over-fitting the training prompts); read the generation logs, and keep the best checkpoint "
                "(--metric-for-best-model)")
    return None


def component_means(entry: dict, weights: dict[str, float]) -> dict[str, float]:
    """Weighted component means of one step."""
    return {name: weight * entry[metrics.component_mean(name)] for name, weight in weights.items()
            if finite(entry.get(metrics.component_mean(name)))}


def dominant_component(train: list[dict], weights: dict[str, float]) -> str | None:
    weights = {name: weight for name, weight in weights.items() if weight}
    if len(weights) < 2:
        return None  # one weighted component carries all the reward by design
    recent = [component_means(e, weights) for e in train[-RECENT:]]
    recent = [parts for parts in recent if len(parts) >= 2]
    if len(recent) < RECENT:
        return None
    sizes = {name: mean([abs(parts.get(name, 0.0)) for parts in recent]) for name in recent[-1]}
    total = sum(sizes.values())
    if total <= 0:
        return None
    name, size = max(sizes.items(), key=lambda item: item[1])
    if size / total < DOMINANT_SHARE:
        return None
    return (f"{name} makes up {size / total:.0%} of the weighted reward: the other components barely steer "
            "training; rebalance the weights (or rescale that component)")


def group_mode(entry: dict) -> str:
    """The zero_variance_groups a step was made under, as its metrics show it."""
    if entry.get(metrics.GROUPS_RESAMPLED) is not None:
        return "resample"
    return "drop" if entry.get(metrics.GROUPS_DROPPED) is not None else "keep"


def flat_share(entry: dict) -> float:
    """The share of a step's own groups with no reward spread (no spread over the whole batch means none within)."""
    if finite(entry.get(metrics.REWARD_STD)) and entry[metrics.REWARD_STD] < 1e-6:
        return 1.0
    share = entry.get(metrics.GROUPS_FLAT, entry.get(metrics.FLAT_GROUPS))
    return share if finite(share) else 0.0


def without_signal(steps: list[dict]) -> str | None:
    """How the steps show no learning signal, or None: every group flat at each of the last ALL_FLAT_STEPS, or most
    groups flat over FLAT_WINDOW steps with no sign of the signal growing."""
    if len(steps) >= ALL_FLAT_STEPS and all(flat_share(entry) >= 1.0 for entry in steps[-ALL_FLAT_STEPS:]):
        return f"for the last {ALL_FLAT_STEPS} steps every group of completions got one reward"
    if len(steps) < FLAT_WINDOW:
        return None
    shares = [flat_share(entry) for entry in steps[-FLAT_WINDOW:]]
    half = FLAT_WINDOW // 2
    if mean(shares) < FLAT_SHARE or mean(shares[half:]) < mean(shares[:half]) - FLAT_TREND:
        return None
    return (f"over the last {FLAT_WINDOW} steps {mean(shares):.0%} of the groups of completions got one reward each, "
            "with no sign of that changing")


def no_learning_signal(train: list[dict], zero_variance_groups: str | None = None) -> str | None:
    """Groups without reward spread for long, told with what zero_variance_groups (the run's setting; unknown, that
    of the last step) does about it: nothing (keep), leave them out (drop), or replace them until its rounds run out
    (resample; no alarm while it fills). Only steps made under that setting count: a run resumed with another judges
    its own steps, not a window that mixes the two. Groups of identical completions are a sampling matter
    (near_greedy_sampling, training_collapse), not the reward's."""
    mode = zero_variance_groups or (group_mode(train[-1]) if train else "keep")
    same = []
    for entry in reversed(train):
        if group_mode(entry) != mode:
            break
        same.insert(0, entry)
    said = without_signal(same)
    if said is None:
        return None
    window = same[-FLAT_WINDOW:]
    if (window_mean(window, metrics.IDENTICAL_GROUPS) or 0.0) >= IDENTICAL_SHARE:
        return None
    said += ": GRPO learns only from differences within a group"
    advice = "make the reward finer-grained, raise group_size or the temperature (try --check-rewards)"
    if mode == "resample":
        if not all(entry.get(metrics.GROUPS_DROPPED) for entry in window):
            return None  # resampling found groups with signal for some steps: they trained
        extra = mean([entry.get(metrics.EXTRA_COMPLETIONS) or 0 for entry in window])
        dropped = mean([entry[metrics.GROUPS_DROPPED] for entry in window])
        return (f"{said}. zero_variance_groups=resample generated {extra:.0f} extra completions a step and still "
                f"dropped {dropped:.1f} flat groups a step, so the steps trained on few groups; {advice}, or raise "
                "resample_rounds")
    if mode == "drop":
        return (f"{said}. zero_variance_groups=drop left those groups out of the loss, so the steps trained on the "
                f"few groups left, or on none; {advice}, or try zero_variance_groups=resample")
    return (f"{said}, so nothing is being learned, and each flat group still costs a backward pass; {advice}, or set "
            "zero_variance_groups to drop (skip them) or resample (replace them from fresh prompts)")


def near_greedy_sampling(train: list[dict], temperature: float | None = None) -> str | None:
    """Groups of identical completions from the first steps on; or, sampling below NEAR_GREEDY_TEMPERATURE, groups
    turning identical or the policy collapsing at any time. The temperature is then what to change: each update
    makes a model sampled near greedy surer of its likeliest answer until it is the only one."""
    start, recent = train[:START], train[-RECENT:]
    first, last = window_mean(start, metrics.IDENTICAL_GROUPS), window_mean(recent, metrics.IDENTICAL_GROUPS)
    at = f"temperature={temperature:g}" if temperature is not None else "the temperature"
    advice = ("so the completions of a prompt do not differ and GRPO has nothing to compare; raise the temperature "
              "(0.7 to 1.0 is usual), or start from a model whose answers vary")
    if len(start) >= START and first is not None and first >= IDENTICAL_SHARE:
        return (f"in the first {START} steps {first:.0%} of the groups were one completion repeated: sampling at {at} "
                f"is close to greedy, {advice}")
    if temperature is None or temperature >= NEAR_GREEDY_TEMPERATURE:
        return None
    signs = collapse_signs(train)
    signs.pop("spike", None)
    if len(recent) >= RECENT and last is not None and last >= IDENTICAL_SHARE and "copies" not in signs:
        signs["copies"] = f"over the last {RECENT} steps {last:.0%} of the groups were one completion repeated"
    if not signs:
        return None
    return (f"sampling at {at} is close to greedy, and the policy is narrowing onto its likeliest answers: "
            + "; ".join(signs.values()) + f". Each update makes the model surer of what it already prefers, {advice}")


def collapse_signs(train: list[dict]) -> dict[str, str]:
    """What shows a policy collapsing after a healthy start, by kind: its entropy falling away ("entropy"), the
    completions turning into loops ("loops") or into one completion per group ("copies"), and told with those, the
    gradient norm jumping ("spike")."""
    if len(train) < START + RECENT:
        return {}
    start, recent, signs = train[:START], train[-RECENT:], {}
    first, last = window_mean(start, metrics.ENTROPY), window_mean(recent, metrics.ENTROPY)
    if first is not None and last is not None and first > 0 and last <= ENTROPY_COLLAPSE * first:
        signs["entropy"] = f"the policy's entropy fell from {first:.2f} to {last:.2f}"
    for kind, key, limit, what in (
            ("loops", metrics.REPETITIVE, REPETITIVE_SHARE, "of the completions loop over a few tokens"),
            ("copies", metrics.IDENTICAL_GROUPS, IDENTICAL_SHARE, "of the groups are one completion repeated")):
        first, last = window_mean(start, key), window_mean(recent, key)
        if first is not None and last is not None and first <= CALM and last >= limit:
            signs[kind] = f"{last:.0%} {what} (at the start {first:.0%})"
    norms = [(entry["step"], entry[metrics.GRAD_NORM]) for entry in train if finite(entry.get(metrics.GRAD_NORM))]
    for index in range(max(SPIKE_HISTORY, len(norms) - RECENT), len(norms)):
        baseline = statistics.median(norm for _, norm in norms[:index])
        step, norm = norms[index]
        if baseline > 0 and norm >= GRAD_SPIKE * baseline:
            signs["spike"] = (f"the gradient norm jumped to {norm:.3g} at step {step} ({norm / baseline:.0f} times "
                              "its usual size)")
            break
    return signs


def training_collapse(train: list[dict], learning_rate: float | None = None, temperature: float | None = None,
                      max_grad_norm: float | None = None) -> str | None:
    """The policy collapsing: entropy or the variety of the completions gone (a gradient-norm jump alone is noise)."""
    signs = collapse_signs(train)
    if not signs.keys() - {"spike"}:
        return None
    rate = f" (it is {learning_rate:g})" if learning_rate else ""
    clip = f"max_grad_norm={max_grad_norm:g} is" if max_grad_norm else "max_grad_norm is"
    heat = f" sampling temperature ({temperature:g})" if temperature is not None else " sampling temperature"
    return ("training is collapsing: " + "; ".join(signs.values()) + ". The updates are too large for this model: "
            f"lower the learning rate{rate} by 3 to 10 times, check that {clip} on (it clips each step's update), keep "
            f"the clipping range epsilon small (0.2 is usual), and keep the{heat} near 1 so the model keeps exploring; "
            "resume from a checkpoint before the collapse")


def non_finite(train: list[dict]) -> str | None:
    """A loss or gradient norm that is NaN or infinite: the weights are being (or will be) destroyed."""
    for entry in train:
        bad = [key for key in (metrics.LOSS, metrics.GRAD_NORM) if isinstance(entry.get(key), float)
               and not math.isfinite(entry[key])]
        if bad:
            what = " and the ".join("gradient norm" if key == metrics.GRAD_NORM else key for key in bad)
            return (f"the {what} became {entry[bad[0]]} at step {entry.get('step')}: lower the learning rate, check "
                    "the rewards for NaN, or train in float32 (turn bf16 off); resume from a checkpoint before it")
    return None


def kl_runaway(train: list[dict], evaluations: list[dict], beta: float | None = None) -> str | None:
    """The policy running far from the reference: TRL's KL when beta > 0, the base view's drift at evaluations
    when beta is 0 (there is no KL then)."""
    if beta:
        start, recent = window_mean(train[:START], metrics.KL), window_mean(train[-RECENT:], metrics.KL)
        if len(train) < START + RECENT or recent is None or recent < KL_LIMIT:
            return None
        if start is not None and recent < KL_GROWTH * start:
            return None
        grown = f" from {start:.3f}" if start is not None else ""
        return (f"the KL to the reference model rose{grown} to {recent:.2f} nats per token over the last {RECENT} "
                f"steps with beta={beta:g}: the policy is running away from where it started; raise beta, lower the "
                "learning rate, or read the generation logs for what it is running towards")
    drift = [entry for entry in evaluations if finite(entry.get(metrics.EVAL_BASE_DRIFT))]
    if not drift or drift[-1][metrics.EVAL_BASE_DRIFT] < DRIFT_LIMIT:
        return None
    return (f"the model's answers have drifted {drift[-1][metrics.EVAL_BASE_DRIFT]:.2f} nats per token from what the "
            f"starting model would say (evaluation at step {drift[-1]['step']}) with beta=0, which puts no brake on "
            "it: set beta (0.01 to 0.04 is usual) or lower the learning rate, and read the generation logs")


def unscored_batches(train: list[dict]) -> str | None:
    """A component that gave no score (None or NaN) to any completion of a batch: the batch trained without it (in
    `multi` TRL had NaN for each completion, `single` counted them 0). The guard logs the share of such batches as
    rewards/<name>/all_missing; the share of completions (rewards/<name>/missing) would hide one among scored ones."""
    for entry in train:
        shares = {key[len("rewards/"):-len(UNSCORED_SUFFIX)]: value for key, value in entry.items()
                  if key.startswith("rewards/") and key.endswith(UNSCORED_SUFFIX) and value}
        if shares:
            which = ", ".join(f"{name} in {share:.0%}" for name, share in shares.items())
            return (f"a reward component scored no completion of a batch (None or NaN for each): {which} of the "
                    f"batches at step {entry.get('step')}, which trained without it; return a number for each "
                    "completion it can judge (None is for one it cannot; a dataset column read under the wrong name "
                    "gives None for all)")
    return None


def reward_hacking(train: list[dict], evaluations: list[dict], generation_log_dir: str | None = None) -> str | None:
    if len(train) < START + RECENT:
        return None
    first, recent = mean(series(train[:START], metrics.REWARD)), mean(series(train[-RECENT:], metrics.REWARD))
    if recent - first < REWARD_RISE:
        return None
    signs = []
    measured = [e for e in evaluations if finite(e.get(metrics.EVAL_BASE_NLL))]
    if measured:
        last = measured[-1]
        if finite(last.get(metrics.EVAL_BASE_DRIFT)) and last[metrics.EVAL_BASE_DRIFT] >= DRIFT_LIMIT:
            signs.append(f"the model's answers have drifted {last['eval_base_drift']:.2f} nats per token from what "
                         "the starting model would say")
        rise = last[metrics.EVAL_BASE_NLL] - measured[0][metrics.EVAL_BASE_NLL]
        if len(measured) > 1 and rise >= max(NLL_RISE_LIMIT, NLL_RISE_SHARE * measured[0][metrics.EVAL_BASE_NLL]):
            signs.append(f"the starting model finds the answers less and less plausible (its loss per token "
                         f"{measured[0]['eval_base_nll']:.2f} -> {last['eval_base_nll']:.2f})")
    start, lately = window_mean(train[:START], metrics.MEAN_LENGTH), window_mean(train[-RECENT:], metrics.MEAN_LENGTH)
    if start is not None and lately is not None and lately <= LENGTH_COLLAPSE * start:
        signs.append(f"answers shrank from {start:.0f} to {lately:.0f} tokens")
    if not signs:
        return None
    where = generation_log_dir or "the generation logs"
    return (f"possible reward hacking: the training reward rose ({first:.2f} -> {recent:.2f}) while "
            + "; ".join(signs) + f". The model may be gaming the reward instead of doing the task: read the answers "
            f"in {where} before trusting this run")


def tools_unused(train: list[dict], evaluations: list[dict]) -> str | None:
    """Tools the model never calls: after the first evaluations every step made no call."""
    calls = series(train, metrics.TOOL_CALLS)
    if len(evaluations) < 2 or len(calls) < RECENT or any(calls):
        return None
    return (f"no tool has been called in any of the {len(calls)} steps: GRPO only reinforces calls the model makes, "
            "so it is not learning to use its tools; tell it about them in --system-prompt, start from a model that "
            "calls tools, or check the generation logs for calls written in a form the template does not read")


def tool_failures(train: list[dict]) -> str | None:
    """Most tool calls failing in the recent steps: the model calls wrongly, or a tool is broken."""
    recent = [entry for entry in train[-RECENT:] if entry.get(metrics.TOOL_CALLS)]
    if len(recent) < RECENT:
        return None
    share = mean([entry.get(metrics.TOOL_FAILURES) or 0.0 for entry in recent])
    if share <= TOOL_FAILURE_SHARE:
        return None
    return (f"{share:.0%} of recent tool calls failed: the model calls tools that do not exist or with arguments they "
            "do not take, or a tool raises or times out; the generation logs show each call and the error the model "
            "was given")


# What a collapsing policy shows as well, said once as its cause: it drifts far from the start (kl_runaway,
# reward_hacking's drift), a reward that loops earn rises, loops run into the length cap, groups turn flat. Sampling
# near greedy is the cause where it shows: the policy collapses into its likeliest answer because of it.
SYMPTOMS = ("kl_runaway", "reward_hacking", "length_cap", "no_learning_signal")
EXPLAINED_BY = {"near_greedy_sampling": ("training_collapse", *SYMPTOMS), "training_collapse": SYMPTOMS}


def find_alarms(history: list[dict], weights: dict[str, float] | None = None,
                max_completion_length: int | None = None, generation_log_dir: str | None = None,
                zero_variance_groups: str | None = None, learning_rate: float | None = None,
                temperature: float | None = None, beta: float | None = None,
                max_grad_norm: float | None = None) -> dict[str, str]:
    """Alarm id -> what it says, for every alarm the history (step records and evaluations) raises, judged with the
    run's settings. The ids are stable: scripts may rely on them. What one alarm explains is not said again as
    another: a collapse's symptoms (EXPLAINED_BY), loops running into the length cap, flat groups of identical
    completions."""
    train, evaluations = train_logs(history), eval_logs(history)
    steps = [entry for entry in history if metrics.EVAL_REWARD not in entry and "step" in entry]
    checks: dict[str, Callable[[], str | None]] = {
        "nan_loss": lambda: non_finite(steps),
        "training_collapse": lambda: training_collapse(train, learning_rate, temperature, max_grad_norm),
        "near_greedy_sampling": lambda: near_greedy_sampling(train, temperature),
        "length_cap": lambda: capped_completions(train, max_completion_length),
        "train_up_eval_down": lambda: train_up_eval_down(train, evaluations),
        "dominant_component": lambda: dominant_component(train, weights or {}),
        "no_learning_signal": lambda: no_learning_signal(train, zero_variance_groups),
        "kl_runaway": lambda: kl_runaway(train, evaluations, beta),
        "unscored_batches": lambda: unscored_batches(train),
        "reward_hacking": lambda: reward_hacking(train, evaluations, generation_log_dir),
        "tools_unused": lambda: tools_unused(train, evaluations),
        "tool_failures": lambda: tool_failures(train)}
    said = {kind: text for kind, check in checks.items() if (text := check())}
    for cause, symptoms in EXPLAINED_BY.items():
        if cause in said:
            for kind in symptoms:
                said.pop(kind, None)
    return said


def alarm_records(history: list[dict], recorded: list[dict] | None = None, **settings) -> list[dict]:
    """Every alarm as {id, step, message}: those the run recorded while training (alarms.json, judged at each step,
    with the step each was first raised at); for a run that kept no record (None), those its logged history raises,
    dated at its last step."""
    if recorded is not None:
        return [record for record in recorded if isinstance(record, dict)] if isinstance(recorded, list) else []
    last_step = max((entry.get("step", 0) for entry in history), default=0)
    return [{"id": kind, "step": last_step, "message": text} for kind, text in find_alarms(history, **settings).items()]
