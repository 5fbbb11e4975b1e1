"""Which groups of completions a training step learns from. A group whose completions all scored the same (a flat
group) has zero advantage: GRPO learns nothing from it, yet it costs a backward pass and, under the token-level
losses, dilutes the normaliser. The setting zero_variance_groups says what a step does with them:

- keep: train on them (TRL's behaviour);
- drop: they leave the loss, so no backward pass is spent on them and the loss is that of the batch without them;
- resample: the step draws fresh prompts, in rounds as large as its own generation, until it holds as many groups
  with signal as it was configured for or it has spent resample_rounds extra rounds (DAPO's dynamic sampling); what is
  still flat then is dropped.

The curriculum (curriculum_solved_rest, curriculum_hopeless_rest) rests a prompt whose whole group scored the run's
highest reward so far (solved) or its lowest (hopeless) for that many steps: when the data order brings it back while
it rests, a fresh prompt takes its place.

Everything here is decided from what every process holds alike (the gathered rewards, the step, the seed and this
state), so every process takes the same decision, and the state travels in each checkpoint, so a resumed run takes
the same decisions as one that never stopped. Plain Python: trainer_hooks.SignalGroupsOnly applies it to TRL's batch.

    assert flat_groups([1.0, 1.0, 0.0, 1.0, float("nan"), 2.0], 2) == [True, False, True]
    policy = GroupPolicy("resample", rounds=1, solved_rest=0, hopeless_rest=0, prompts=4, seed=0)
    choice = policy.first_round([0.0, 0.0, 1.0, 0.0], group_size=2)       # group 0 flat, group 1 has signal
    assert policy.wants_more(choice) and choice.kept == [(0, 1)]
    policy.next_round(choice, [1.0, 0.0, 1.0, 1.0], group_size=2)         # round 1: group 0 has signal
    assert choice.kept == [(0, 1), (1, 0)] and not policy.wants_more(choice) and choice.resampled == 1
    assert rows_per_process([(0, 1), (1, 0)], group_size=2, rows=4, processes=1) == [[(0, 2), (0, 3), (1, 0), (1, 1)]]
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
from dataclasses import dataclass, field

MODES = ("keep", "drop", "resample")
# What zero_variance_groups=auto means where it applies, chosen from bench/results/zero_variance.json: at the same
# wall-clock budget on SmolLM2-135M, resample ended highest in held-out accuracy over two seeds (mean 92% against
# keep's 76% and drop's 87%) and was the only mode to pass keep's final accuracy within 70% of keep's time.
DEFAULT_MODE = "resample"
DEFAULT_RESAMPLE_ROUNDS = 2
FLAT_STD = 1e-8  # TRL's own test for a zero standard deviation (torch.isclose against 0)
STATE_VERSION = 1


def flat_groups(rewards: list[float], group_size: int) -> list[bool]:
    """For each group of `group_size` consecutive totals, whether it carries no signal: fewer than two completions
    scored (NaN is unscored; TRL gives those advantage 0), or the scored ones all got the same reward."""
    flags = []
    for start in range(0, len(rewards), group_size):
        scored = [value for value in rewards[start:start + group_size] if not math.isnan(value)]
        flags.append(len(scored) < 2 or statistics.stdev(scored) <= FLAT_STD)
    return flags


def prompt_key(prompt) -> str:
    """A prompt's identity for the curriculum: the same text or messages give the same key in every process."""
    text = json.dumps(prompt, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Choice:
    """One step's decision: the groups kept, as (round, group) in the order they enter the batch, and its counts."""
    groups: int  # groups in one round (the step's configured number)
    flat: int = 0  # flat groups in the step's own round
    kept: list[tuple[int, int]] = field(default_factory=list)
    rounds: int = 1
    swapped: int = 0  # prompts the curriculum swapped out of the step's own round

    @property
    def resampled(self) -> int:
        return sum(1 for round_index, _ in self.kept if round_index > 0)

    @property
    def dropped(self) -> int:
        """Groups left out of the loss: the flat groups no group from a fresh prompt replaced."""
        return self.groups - len(self.kept)

    def fingerprint(self) -> int:
        """The decision as one number, for comparing across processes."""
        digest = hashlib.sha1(repr((self.kept, self.rounds, self.swapped)).encode()).digest()
        return int.from_bytes(digest[:7], "big")


class Reserve:
    """Fresh prompts for resampling and for the curriculum's swaps: the training set in an order of its own, seeded
    and independent of the data loader's, drawn one after another across passes."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.passes, self.position = size, seed, 0, 0
        self.order: list[int] | None = None

    def current_order(self) -> list[int]:
        if self.order is None:
            self.order = list(range(self.size))
            random.Random(f"{self.seed}:{self.passes}").shuffle(self.order)
        return self.order

    def draw(self, accept) -> int:
        """The next index `accept(index)` takes; within one pass over the data, else the next one at all."""
        first = None
        for _ in range(self.size):
            index = self.current_order()[self.position]
            self.position += 1
            if self.position == self.size:
                self.passes, self.position, self.order = self.passes + 1, 0, None
            first = index if first is None else first
            if accept(index):
                return index
        return first

    def state(self) -> dict:
        return {"passes": self.passes, "position": self.position}

    def load(self, state: dict) -> None:
        self.passes, self.position, self.order = int(state["passes"]), int(state["position"]), None


class GroupPolicy:
    """zero_variance_groups, resample_rounds and the curriculum for one run (see the module's docstring)."""

    def __init__(self, mode: str, rounds: int, solved_rest: int, hopeless_rest: int, prompts: int, seed: int):
        self.mode, self.rounds = mode, rounds
        self.solved_rest, self.hopeless_rest = solved_rest, hopeless_rest
        self.reserve = Reserve(prompts, seed)
        self.resting: dict[str, list] = {}  # prompt key -> [the step it rests until, "solved" or "hopeless"]
        self.highest: float | None = None  # the run's highest and lowest total reward so far
        self.lowest: float | None = None
        self.said_all_resting = False

    @property
    def curriculum(self) -> bool:
        return self.solved_rest > 0 or self.hopeless_rest > 0

    @property
    def draws_prompts(self) -> bool:
        """Whether the policy needs prompts beyond the data loader's (resampling, or the curriculum's swaps)."""
        return self.mode == "resample" or self.curriculum

    def rests(self, key: str, step: int) -> bool:
        entry = self.resting.get(key)
        return entry is not None and step < entry[0]

    def first_round(self, rewards: list[float], group_size: int) -> Choice:
        flat = flat_groups(rewards, group_size)
        choice = Choice(groups=len(flat), flat=sum(flat))
        choice.kept = [(0, group) for group, is_flat in enumerate(flat) if not is_flat or self.mode == "keep"]
        return choice

    def wants_more(self, choice: Choice) -> bool:
        return self.mode == "resample" and len(choice.kept) < choice.groups and choice.rounds <= self.rounds

    def next_round(self, choice: Choice, rewards: list[float], group_size: int) -> None:
        """Adds the groups with signal of an extra round, up to the step's number of groups."""
        signal = [group for group, is_flat in enumerate(flat_groups(rewards, group_size)) if not is_flat]
        room = choice.groups - len(choice.kept)
        choice.kept += [(choice.rounds, group) for group in signal[:room]]
        choice.rounds += 1

    def observe(self, keys: list[str], rewards: list[float], group_size: int, step: int) -> None:
        """The curriculum's bookkeeping after a round: `keys` has one prompt key per group, `rewards` the gathered
        totals. A flat group at the run's highest reward rests solved_rest steps, one at its lowest hopeless_rest."""
        if not self.curriculum:
            return
        scored = [value for value in rewards if not math.isnan(value)]
        if scored:
            self.highest = max(scored + ([self.highest] if self.highest is not None else []))
            self.lowest = min(scored + ([self.lowest] if self.lowest is not None else []))
        self.resting = {key: entry for key, entry in self.resting.items() if step < entry[0]}
        if self.highest is None or self.highest - self.lowest <= FLAT_STD:
            return  # every reward so far was the same: neither solved nor hopeless can be told yet
        for group, is_flat in enumerate(flat_groups(rewards, group_size)):
            values = [value for value in rewards[group * group_size:(group + 1) * group_size] if not math.isnan(value)]
            if not is_flat or not values:
                continue
            if values[0] >= self.highest - FLAT_STD and self.solved_rest:
                self.resting[keys[group]] = [step + self.solved_rest, "solved"]
            elif values[0] <= self.lowest + FLAT_STD and self.hopeless_rest:
                self.resting[keys[group]] = [step + self.hopeless_rest, "hopeless"]

    def all_resting(self, step: int) -> str | None:
        """Once a run: what a step that found no prompt free to take (every one resting) means; None after."""
        if self.said_all_resting:
            return None
        self.said_all_resting = True
        counts = self.counts(step)
        return (f"curriculum: at step {step + 1} every training prompt is resting ({counts['solved']} solved, "
                f"{counts['hopeless']} hopeless, of {self.reserve.size}), so the step takes resting prompts, whose "
                "groups are flat and teach nothing, until rests end; shorten curriculum_solved_rest and "
                "curriculum_hopeless_rest, or train on more prompts (said once)")

    def counts(self, step: int) -> dict[str, int]:
        """Prompts resting now, by why."""
        now = [kind for until, kind in self.resting.values() if step < until]
        return {"solved": now.count("solved"), "hopeless": now.count("hopeless")}

    def state(self) -> dict:
        return {"version": STATE_VERSION, "prompts": self.reserve.size, "reserve": self.reserve.state(),
                "resting": self.resting, "highest": self.highest, "lowest": self.lowest}

    def load(self, state: dict) -> None:
        """A checkpoint's state; one written for a data set of another size starts the reserve afresh."""
        if state.get("version") != STATE_VERSION:
            return
        if state.get("prompts") == self.reserve.size:
            self.reserve.load(state["reserve"])
        self.resting = {str(key): [int(until), str(kind)] for key, (until, kind) in state["resting"].items()}
        self.highest, self.lowest = state["highest"], state["lowest"]


MAX_RESAMPLE_ROUNDS = 16


def setting_problems(config) -> list[str]:
    """What is wrong with the run's zero_variance_groups, resample_rounds and curriculum rests."""
    problems = [f"{name}={getattr(config, name)} must be >= 0 (0: never)"
                for name in ("curriculum_solved_rest", "curriculum_hopeless_rest") if getattr(config, name) < 0]
    if not 0 <= config.resample_rounds <= MAX_RESAMPLE_ROUNDS:
        problems.append(f"resample_rounds={config.resample_rounds} must be between 0 and {MAX_RESAMPLE_ROUNDS}")
    elif config.resample_rounds != DEFAULT_RESAMPLE_ROUNDS and config.zero_variance_groups not in ("resample", "auto"):
        problems.append(f"resample_rounds={config.resample_rounds} applies only with zero_variance_groups=resample "
                        f"(this run has {config.zero_variance_groups})")
    # Each setting that draws prompts out of order, with what to set instead.
    drawn = {"zero_variance_groups=resample": "zero_variance_groups=drop"} if config.zero_variance_groups == \
        "resample" else {}
    drawn.update({f"{name}={getattr(config, name)}": f"{name}=0" for name in ("curriculum_solved_rest",
                                                                           "curriculum_hopeless_rest")
                  if getattr(config, name)})
    if drawn and config.streaming:
        problems.append(f"{' and '.join(drawn)} {'draws' if len(drawn) == 1 else 'draw'} prompts from anywhere in "
                        "the training data, and streaming=true reads it in order only: turn streaming off, or set "
                        f"{' and '.join(drawn.values())}")
    return problems


def resolved_mode(setting: str, backend: str | None, streaming: bool = False) -> str:
    """zero_variance_groups as a run applies it. auto is DEFAULT_MODE, except on the unsloth backend, whose rewritten
    training loop this has not been run against (no GPU here), where it is keep, and with streaming data, which
    cannot be drawn from at will, where it is drop."""
    if setting != "auto":
        return setting
    if backend == "unsloth":
        return "keep"
    return "drop" if streaming else DEFAULT_MODE


def policy_for(config, backend: str | None, prompts: int) -> GroupPolicy | None:
    """The run's GroupPolicy, or None when every group trains as in TRL (keep, no curriculum)."""
    mode = resolved_mode(config.zero_variance_groups, backend, config.streaming)
    if mode == "keep" and not (config.curriculum_solved_rest or config.curriculum_hopeless_rest):
        return None
    return GroupPolicy(mode, config.resample_rounds, config.curriculum_solved_rest, config.curriculum_hopeless_rest,
                       prompts, config.seed)


def describe(policy: GroupPolicy | None) -> str:
    """The start-up line."""
    if policy is None:
        return "zero_variance_groups: keep (groups whose completions all scored the same stay in the loss)"
    said = {"keep": "keep (flat groups stay in the loss)", "drop": "drop (flat groups leave the loss)",
            "resample": f"resample (flat groups are replaced from fresh prompts, at most {policy.rounds} extra "
                        "generation rounds a step; what is still flat leaves the loss)"}[policy.mode]
    rests = [f"solved prompts rest {policy.solved_rest} steps"] * bool(policy.solved_rest) + \
        [f"hopeless prompts rest {policy.hopeless_rest} steps"] * bool(policy.hopeless_rest)
    return f"zero_variance_groups: {said}" + (f"; curriculum: {', '.join(rests)}" if rests else "")


def rows_per_process(kept: list[tuple[int, int]], group_size: int, rows: int, processes: int) -> list[list]:
    """For each process, its rows of the kept groups as (round, local row): process p holds the rows p*rows to
    (p+1)*rows - 1 of every round, TRL's layout, so a group may lie across two processes."""
    per_process: list[list] = [[] for _ in range(processes)]
    for round_index, group in kept:
        for row in range(group * group_size, (group + 1) * group_size):
            per_process[row // rows].append((round_index, row % rows))
    return per_process


def padded_size(counts: list[int], chunks: int) -> int:
    """Rows each process's batch holds once padded: the same in every process (they step together) and a multiple
    of the `chunks` TRL splits it into, with at least one row in each chunk."""
    return chunks * max(1, -(-max(counts) // chunks))
