"""Alarms: what in a run's metric history means the run is wasting its time, said in plain words.

Each check reads the log history transformers keeps (`state.log_history`: one dict per log, training and evaluation)
and returns a sentence or None; its stable id is its key in find_alarms. grpo_tool.callbacks.AlarmCallback raises
each once, in the log and in {output_dir}/alarms.json (id, step, message); the closing summary and the report list
them again. Components are logged as rewards/<component>/mean in both reward modes.

    log_history = [{"step": 10, "reward": 0.2, "completions/clipped_ratio": 0.95}] * 3
    alarms = find_alarms(log_history, weights={"accuracy": 0.4}, max_completion_length=256)
    assert list(alarms) == ["length_cap"]    # 95% of the completions were cut off at 256 tokens
"""

from __future__ import annotations

import math

from grpo_tool import metrics
from grpo_tool.reward_guard import ALL_MISSING

CAPPED_SHARE = 0.8  # completions at the length cap, in the recent logs, from which on it is an alarm
RECENT = 3  # logs that make "recent"
FLAT_LOGS = 5  # consecutive logs with no reward spread that make an alarm
FLAT_SHARE = 0.9  # share of groups with zero reward spread that counts as none
DOMINANT_SHARE = 0.9  # share of the total reward's size from one component that counts as dominating
# Reward hacking: the training reward rose while the answers moved away from what the starting model finds plausible.
# Set from real runs of SmolLM2-135M-Instruct (bench/reward_hacking.py, figures in the README).
# The hacked run there: reward 0.51 -> 0.75, base NLL 2.19 -> 2.89 -> 3.52 -> 3.92, drift 0.03 -> 1.35, length 42 -> 16
# tokens ("Compute 93 minus 30." -> "Scary thing."); a healthy one: reward 0.59 -> 0.88, base NLL 1.92 -> 1.81, drift
# 0.07, length 39 -> 47; the tiny quick test (a random model, whose base finds everything equally implausible):
# reward 0.05 -> 0.22, base NLL flat at 6.25, drift 0.48. Drift alone does not tell hacking from learning at these
# sizes, so its limit is high; the base model's loss rising and the length collapsing do.
REWARD_RISE = 0.1  # the recent training reward over the first logged one, at least
DRIFT_LIMIT = 1.0  # eval_base_drift, nats per token: how far the current model has moved from the base
NLL_RISE_LIMIT = 0.3  # eval_base_nll's rise since the first evaluation, nats per token, and at least...
NLL_RISE_SHARE = 0.15  # ...this share of the first evaluation's value
LENGTH_COLLAPSE = 0.5  # the recent mean completion length at most this share of the first logged one
UNSCORED_SUFFIX = f"/{ALL_MISSING}"  # rewards/<name>/all_missing: the share of batches a component scored none of
TOOL_FAILURE_SHARE = 0.5  # share of recent tool calls failing from which on it is an alarm


def train_logs(history: list[dict]) -> list[dict]:
    return [entry for entry in history if metrics.REWARD in entry and metrics.EVAL_REWARD not in entry]


def eval_logs(history: list[dict]) -> list[dict]:
    return [entry for entry in history if entry.get(metrics.EVAL_REWARD) is not None]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def capped_completions(history: list[dict], max_completion_length: int | None) -> str | None:
    shares = [e[metrics.CLIPPED_RATIO] for e in train_logs(history)[-RECENT:]
              if e.get(metrics.CLIPPED_RATIO) is not None]
    if len(shares) < RECENT or mean(shares) < CAPPED_SHARE:
        return None
    cap = f"max_completion_length={max_completion_length}" if max_completion_length else "max_completion_length"
    return (f"{mean(shares):.0%} of recent completions hit {cap}: answers are being cut off; raise the cap or reward "
            "answers that finish")


def train_up_eval_down(history: list[dict]) -> str | None:
    evaluations = eval_logs(history)[-RECENT:]
    if len(evaluations) < RECENT:
        return None
    rewards = [e[metrics.EVAL_REWARD] for e in evaluations]
    if not all(later < earlier for earlier, later in zip(rewards, rewards[1:])):
        return None
    first_step = evaluations[0]["step"]
    rewarded = [e for e in train_logs(history) if e.get(metrics.REWARD) is not None]
    before = [e[metrics.REWARD] for e in rewarded if e["step"] <= first_step]
    recent = [e[metrics.REWARD] for e in train_logs(history)[-RECENT:] if e.get(metrics.REWARD) is not None]
    if not before or not recent or mean(recent) <= before[-1]:
        return None
    return (f"training reward rose ({before[-1]:.3f} -> {mean(recent):.3f}) while evaluation reward fell for "
            f"{RECENT} evaluations in a row ({rewards[0]:.3f} -> {rewards[-1]:.3f}): the model may be gaming the "
            "reward or over-fitting the training prompts")


def component_means(entry: dict, weights: dict[str, float]) -> dict[str, float]:
    """Weighted component means of one log."""
    return {name: weight * entry[metrics.component_mean(name)] for name, weight in weights.items()
            if entry.get(metrics.component_mean(name)) is not None}


def dominant_component(history: list[dict], weights: dict[str, float]) -> str | None:
    weights = {name: weight for name, weight in weights.items() if weight}
    if len(weights) < 2:
        return None  # one weighted component carries all the reward by design
    recent = [component_means(e, weights) for e in train_logs(history)[-RECENT:]]
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
    """The zero_variance_groups a training log was made under, as its metrics show it."""
    if entry.get(metrics.GROUPS_RESAMPLED) is not None:
        return "resample"
    return "drop" if entry.get(metrics.GROUPS_DROPPED) is not None else "keep"


def no_learning_signal(history: list[dict], zero_variance_groups: str | None = None) -> str | None:
    """Almost every group flat for FLAT_LOGS logs in a row, told with what zero_variance_groups (the run's setting;
    unknown, that of the last log) does about it: nothing (keep), leave them out (drop), or replace them until its
    rounds run out (resample; no alarm while it fills). Only logs made under that setting count: a run resumed with
    another judges its own logs, not a window that mixes the two."""
    logs = train_logs(history)
    mode = zero_variance_groups or (group_mode(logs[-1]) if logs else "keep")
    same = []
    for entry in reversed(logs):
        if group_mode(entry) != mode or len(same) == FLAT_LOGS:
            break
        same.append(entry)
    if len(same) < FLAT_LOGS:
        return None

    def flat(entry: dict) -> bool:  # no spread over the whole batch (reward_std) means none within its groups
        share = entry.get(metrics.GROUPS_FLAT, entry.get(metrics.FLAT_GROUPS, 0))
        return share >= FLAT_SHARE or (entry.get(metrics.REWARD_STD) is not None and entry[metrics.REWARD_STD] < 1e-6)

    if not all(flat(entry) for entry in same):
        return None
    said = (f"for the last {FLAT_LOGS} logs almost every group of completions got the same reward: GRPO learns only "
            "from differences within a group")
    advice = "make the reward finer-grained, raise group_size or the temperature (try --check-rewards)"
    if mode == "resample":
        if not all(entry.get(metrics.GROUPS_DROPPED) for entry in same):
            return None  # resampling found groups with signal for some steps: they trained
        extra = mean([entry.get(metrics.EXTRA_COMPLETIONS) or 0 for entry in same])
        dropped = mean([entry[metrics.GROUPS_DROPPED] for entry in same])
        return (f"{said}. zero_variance_groups=resample generated {extra:.0f} extra completions a step and still "
                f"dropped {dropped:.1f} flat groups a step, so the steps trained on few groups; {advice}, or raise "
                "resample_rounds")
    if mode == "drop":
        return (f"{said}. zero_variance_groups=drop left those groups out of the loss, so the steps trained on the "
                f"few groups left, or on none; {advice}, or try zero_variance_groups=resample")
    return (f"{said}, so nothing is being learned, and each flat group still costs a backward pass; {advice}, or set "
            "zero_variance_groups to drop (skip them) or resample (replace them from fresh prompts)")


def unscored_batches(history: list[dict]) -> str | None:
    """A component that gave no score (None or NaN) to any completion of a batch: the batch trained without it (in
    `multi` TRL had NaN for each completion, `single` counted them 0). The guard logs the share of such batches as
    rewards/<name>/all_missing; the share of completions (rewards/<name>/missing) would hide one among scored ones."""
    for entry in train_logs(history):
        shares = {key[len("rewards/"):-len(UNSCORED_SUFFIX)]: value for key, value in entry.items()
                  if key.startswith("rewards/") and key.endswith(UNSCORED_SUFFIX) and value}
        if shares:
            which = ", ".join(f"{name} in {share:.0%}" for name, share in shares.items())
            return (f"a reward component scored no completion of a batch (None or NaN for each): {which} of the "
                    f"batches logged at step {entry.get('step')}, which trained without it; return a number for each "
                    "completion it can judge (None is for one it cannot; a dataset column read under the wrong name "
                    "gives None for all)")
    return None


def nan_loss(history: list[dict]) -> str | None:
    for entry in history:
        loss = entry.get(metrics.LOSS)
        if isinstance(loss, float) and math.isnan(loss):
            return (f"the loss became NaN at step {entry.get('step')}: lower the learning rate, check the rewards for "
                    "NaN, or turn bf16 off")
    return None


def reward_hacking(history: list[dict], generation_log_dir: str | None = None) -> str | None:
    train = [e for e in train_logs(history) if e.get(metrics.REWARD) is not None]
    if len(train) < 2:
        return None
    first, recent = train[0][metrics.REWARD], mean([e[metrics.REWARD] for e in train[-RECENT:]])
    if recent - first < REWARD_RISE:
        return None
    signs = []
    measured = [e for e in eval_logs(history) if e.get(metrics.EVAL_BASE_NLL) is not None]
    if measured:
        last = measured[-1]
        if last.get(metrics.EVAL_BASE_DRIFT) is not None and last[metrics.EVAL_BASE_DRIFT] >= DRIFT_LIMIT:
            signs.append(f"the model's answers have drifted {last['eval_base_drift']:.2f} nats per token from what "
                         "the starting model would say")
        rise = last[metrics.EVAL_BASE_NLL] - measured[0][metrics.EVAL_BASE_NLL]
        if len(measured) > 1 and rise >= max(NLL_RISE_LIMIT, NLL_RISE_SHARE * measured[0][metrics.EVAL_BASE_NLL]):
            signs.append(f"the starting model finds the answers less and less plausible (its loss per token "
                         f"{measured[0]['eval_base_nll']:.2f} -> {last['eval_base_nll']:.2f})")
    lengths = [e[metrics.MEAN_LENGTH] for e in train if e.get(metrics.MEAN_LENGTH) is not None]
    if len(lengths) > RECENT and mean(lengths[-RECENT:]) <= LENGTH_COLLAPSE * lengths[0]:
        signs.append(f"answers shrank from {lengths[0]:.0f} to {mean(lengths[-RECENT:]):.0f} tokens")
    if not signs:
        return None
    where = generation_log_dir or "the generation logs"
    return (f"possible reward hacking: the training reward rose ({first:.2f} -> {recent:.2f}) while "
            + "; ".join(signs) + f". The model may be gaming the reward instead of doing the task: read the answers "
            f"in {where} before trusting this run")


def tools_unused(history: list[dict]) -> str | None:
    """Tools the model never calls: after the first evaluations every logged step made no call."""
    calls = [entry[metrics.TOOL_CALLS] for entry in train_logs(history) if entry.get(metrics.TOOL_CALLS) is not None]
    if len(eval_logs(history)) < 2 or len(calls) < RECENT or any(calls):
        return None
    return (f"no tool has been called in any of the {len(calls)} logged steps: GRPO only reinforces calls the model "
            "makes, so it is not learning to use its tools; tell it about them in --system-prompt, start from a model "
            "that calls tools, or check the generation logs for calls written in a form the template does not read")


def tool_failures(history: list[dict]) -> str | None:
    """Most tool calls failing in the recent logs: the model calls wrongly, or a tool is broken."""
    recent = [entry for entry in train_logs(history)[-RECENT:] if entry.get(metrics.TOOL_CALLS)]
    if len(recent) < RECENT:
        return None
    share = mean([entry.get(metrics.TOOL_FAILURES) or 0.0 for entry in recent])
    if share <= TOOL_FAILURE_SHARE:
        return None
    return (f"{share:.0%} of recent tool calls failed: the model calls tools that do not exist or with arguments they "
            "do not take, or a tool raises or times out; the generation logs show each call and the error the model "
            "was given")


def find_alarms(history: list[dict], weights: dict[str, float] | None = None,
                max_completion_length: int | None = None, generation_log_dir: str | None = None,
                zero_variance_groups: str | None = None) -> dict[str, str]:
    """Alarm id -> what it says, for every alarm the history raises, judged with the run's settings. The ids are
    stable: scripts may rely on them."""
    checks = {"length_cap": capped_completions(history, max_completion_length),
              "train_up_eval_down": train_up_eval_down(history),
              "dominant_component": dominant_component(history, weights or {}),
              "no_learning_signal": no_learning_signal(history, zero_variance_groups),
              "unscored_batches": unscored_batches(history),
              "nan_loss": nan_loss(history),
              "reward_hacking": reward_hacking(history, generation_log_dir),
              "tools_unused": tools_unused(history),
              "tool_failures": tool_failures(history)}
    return {kind: text for kind, text in checks.items() if text}


def alarm_records(history: list[dict], recorded: list[dict] | None = None, **settings) -> list[dict]:
    """Every alarm as {id, step, message}: those recorded while training (alarms.json, with the step each was first
    raised at), then any the whole history raises that were not (dated at its last step)."""
    records = list(recorded or [])
    seen = {record.get("id") for record in records}
    last_step = max((entry.get("step", 0) for entry in history), default=0)
    records += [{"id": kind, "step": last_step, "message": text}
                for kind, text in find_alarms(history, **settings).items() if kind not in seen]
    return records
