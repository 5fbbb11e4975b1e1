"""zero_variance_groups and the curriculum: what is decided (grpo_tool/group_choice.py) and what TRL's batch becomes
(trainer_hooks.SignalGroupsOnly). Flat groups leave the loss exactly, resampling fills the step and stops at its
bound, the curriculum rests prompts, and a resumed run takes the same decisions as one that never stopped. The run on
two processes is in test_interrupts.py (the launcher's test)."""

import json
import shutil

import pytest

from conftest import FIXTURES, run_main
from grpo_tool.group_choice import (
    GroupPolicy,
    Reserve,
    flat_groups,
    padded_size,
    prompt_key,
    resolved_mode,
    rows_per_process,
)

FLAT_REWARD = f"{FIXTURES / 'custom_rewards.py'}:flat_for_some"
NAN = float("nan")


def test_flat_groups_are_those_without_a_spread():
    rewards = [0.5, 0.5, 0.5, 0.0, 1.0, 1.0, NAN, 2.0, NAN, NAN]
    assert flat_groups(rewards, 2) == [True, False, True, True, True]  # one scored completion has no spread either


def test_auto_is_resample_where_it_can_be():
    assert resolved_mode("auto", "transformers") == "resample"
    assert resolved_mode("auto", "unsloth") == "keep"  # its rewritten loop has not been run against this
    assert resolved_mode("auto", "transformers", streaming=True) == "drop"  # a stream cannot be drawn from at will
    assert resolved_mode("drop", "unsloth") == "drop"


def test_each_mode_keeps_its_groups():
    rewards = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]  # groups 0 and 2 flat
    assert GroupPolicy("keep", 2, 0, 0, 4, 0).first_round(rewards, 2).kept == [(0, 0), (0, 1), (0, 2)]
    drop = GroupPolicy("drop", 2, 0, 0, 4, 0)
    choice = drop.first_round(rewards, 2)
    assert choice.kept == [(0, 1)] and choice.dropped == 2 and choice.flat == 2 and not drop.wants_more(choice)


def test_resampling_fills_the_step_or_stops_at_its_bound():
    policy = GroupPolicy("resample", 2, 0, 0, 10, 0)
    choice, rounds = policy.first_round([1.0, 1.0, 0.0, 1.0, 1.0, 1.0], 2), 0
    while policy.wants_more(choice):  # every fresh group flat: two extra rounds, then it stops
        policy.next_round(choice, [0.0] * 6, 2)
        rounds += 1
    assert rounds == 2 and choice.kept == [(0, 1)] and choice.dropped == 2 and choice.resampled == 0
    choice = policy.first_round([1.0, 1.0, 0.0, 1.0, 1.0, 1.0], 2)
    policy.next_round(choice, [0.0, 1.0, 0.0, 0.0, 1.0, 0.0], 2)  # two groups with signal: the step is full
    assert choice.kept == [(0, 1), (1, 0), (1, 2)] and choice.resampled == 2 and not policy.wants_more(choice)


def test_the_curriculum_rests_solved_and_hopeless_prompts_and_its_state_travels():
    policy = GroupPolicy("keep", 2, solved_rest=5, hopeless_rest=2, prompts=4, seed=0)
    policy.observe(["a"], [0.0, 0.0], 2, step=0)
    assert not policy.rests("a", 0)  # every reward so far the same: nothing is known to be solved or hopeless
    policy.observe(["a", "b", "c"], [0.0, 0.0, 1.0, 1.0, 0.0, 1.0], 2, step=1)
    assert policy.rests("b", 5) and not policy.rests("b", 6)  # solved: sits out steps 2 to 6
    assert policy.rests("a", 2) and not policy.rests("a", 3)  # hopeless: back sooner
    assert not policy.rests("c", 1) and policy.counts(2) == {"solved": 1, "hopeless": 1}
    policy.reserve.draw(lambda index: True)
    again = GroupPolicy("keep", 2, 5, 2, 4, 0)
    again.load(json.loads(json.dumps(policy.state())))
    assert again.state() == policy.state()
    assert GroupPolicy("keep", 2, 5, 2, 7, 0).state()["reserve"] == {"passes": 0, "position": 0}


def test_the_reserve_is_seeded_and_resumable():
    first, second = Reserve(5, 3), Reserve(5, 3)
    drawn = [first.draw(lambda index: True) for _ in range(3)]
    second.load(first.state())
    assert [first.draw(lambda index: True) for _ in range(4)] == [second.draw(lambda index: True) for _ in range(4)]
    assert len(set(drawn)) == 3  # within a pass, each prompt once
    assert Reserve(5, 3).draw(lambda index: index % 2 == 1) % 2 == 1
    assert Reserve(5, 3).draw(lambda index: False) in range(5)  # nothing acceptable: the next prompt all the same


def test_rows_go_to_the_process_that_holds_them():
    # 2 processes with 3 rows each, groups of 2: group 1 lies across both.
    assert rows_per_process([(0, 1)], group_size=2, rows=3, processes=2) == [[(0, 2)], [(0, 0)]]
    assert padded_size([1, 1], 2) == 2 and padded_size([0, 0], 3) == 3 and padded_size([5, 3], 2) == 6


@pytest.fixture(scope="module")
def tiny_trl_trainer(tmp_path_factory):
    """TRL's trainer as a run builds it, on the tiny model, with a reward that makes some groups flat."""
    from config import build_config
    from grpo_trainer import GRPOTrainer

    config = build_config(mode="quick_test", overrides={"output_dir": str(tmp_path_factory.mktemp("zv") / "out"),
                                                         "reward_functions": [FLAT_REWARD]})
    wrapper = GRPOTrainer(config)
    wrapper.build_trainer(wrapper.prepare_data(), evaluate=False)
    trainer = wrapper.trainer
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def prompts_of(trainer, kind: str, count: int) -> list[int]:
    """Indices of training prompts flat_for_some scores flat (the same for every completion) or by completion."""
    def flat(index):
        size = len(str(trainer.train_dataset[index]["prompt"]))
        return size % 2 == 0 or size % 3 == 0

    return [i for i in range(len(trainer.train_dataset)) if flat(i) == (kind == "flat")][:count]


def gradient(trainer, batch) -> list:
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch).backward()
    return [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad and p.grad is not None]


def test_dropped_groups_leave_the_loss_exactly(tiny_trl_trainer):
    import torch

    from grpo_tool.trainer_hooks import rows_of

    trainer, size = tiny_trl_trainer, tiny_trl_trainer.num_generations
    order = [prompts_of(trainer, "flat", 1)[0], prompts_of(trainer, "signal", 1)[0]]
    inputs = [trainer.train_dataset[index] for index in order for _ in range(size)]
    trainer.groups = None
    torch.manual_seed(0)
    kept = trainer._generate_and_score_completions(inputs)
    totals = (trainer.round_rewards * trainer.reward_weights.unsqueeze(0)).nansum(dim=1).tolist()
    assert flat_groups(totals, size) == [True, False]
    without_flat = rows_of(kept, list(range(size, 2 * size)))
    without_flat["num_items_in_batch"] = without_flat["completion_mask"].sum()

    trainer.groups = GroupPolicy("drop", 2, 0, 0, len(trainer.train_dataset), 0)
    torch.manual_seed(0)
    dropped = trainer._generate_and_score_completions(inputs)
    assert torch.equal(dropped["completion_ids"], without_flat["completion_ids"])
    assert dropped["num_items_in_batch"] == without_flat["num_items_in_batch"] < kept["num_items_in_batch"]
    expected, got, with_flat = gradient(trainer, without_flat), gradient(trainer, dropped), gradient(trainer, kept)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(expected, got))
    assert any(a.abs().sum() > 0 for a in got)
    assert not all(torch.allclose(a, b) for a, b in zip(got, with_flat))  # keep dilutes the loss with flat tokens
    assert trainer._metrics["train"]["groups/dropped"][-1] == 1 and trainer._metrics["train"]["groups/flat"][-1] == 0.5


def resample(trainer, kind: str, rounds: int):
    """One step of two flat groups, resampled from training prompts of `kind` only."""
    import torch

    everything, size = trainer.train_dataset, trainer.num_generations
    inputs = [everything[index] for index in prompts_of(trainer, "flat", 2) for _ in range(size)]
    trainer.train_dataset = everything.select(prompts_of(trainer, kind, 20))
    trainer.groups = GroupPolicy("resample", rounds, 0, 0, len(trainer.train_dataset), 0)
    calls = len(trainer._metrics["train"]["frac_reward_zero_std"])
    try:
        torch.manual_seed(0)
        batch = trainer._generate_and_score_completions(inputs)
    finally:
        trainer.train_dataset, trainer.prompt_keys = everything, None
    logged = {name: trainer._metrics["train"][f"groups/{name}"][-1]
              for name in ("dropped", "resampled", "extra_completions")}
    return batch, len(trainer._metrics["train"]["frac_reward_zero_std"]) - calls, logged


def test_resampling_fills_the_step_from_fresh_prompts(tiny_trl_trainer):
    batch, generations, logged = resample(tiny_trl_trainer, "signal", rounds=3)
    size = tiny_trl_trainer.num_generations
    assert len(batch["advantages"]) == 2 * size and logged["resampled"] == 2 and logged["dropped"] == 0
    assert logged["extra_completions"] == (generations - 1) * 2 * size and 2 <= generations <= 4
    for group in range(2):
        assert batch["advantages"][group * size:(group + 1) * size].abs().sum() > 0  # every group has signal


def test_resampling_stops_at_its_bound(tiny_trl_trainer):
    batch, generations, logged = resample(tiny_trl_trainer, "flat", rounds=2)
    assert generations == 3 and logged == {"dropped": 2, "resampled": 0, "extra_completions": 16}
    # Nothing with signal: the step's batch is one row that weighs nothing (no token in the loss).
    assert len(batch["advantages"]) == 1 and batch["completion_mask"].sum() == 0 and batch["num_items_in_batch"] == 0


def test_the_curriculum_swaps_a_resting_prompt_for_a_fresh_one(tiny_trl_trainer, monkeypatch):
    import torch

    trainer, size = tiny_trl_trainer, tiny_trl_trainer.num_generations
    resting, other = (prompt_key(trainer.train_dataset[index]["prompt"]) for index in
                      (prompts_of(trainer, "flat", 1)[0], prompts_of(trainer, "signal", 1)[0]))
    trainer.groups = GroupPolicy("keep", 2, 10, 0, len(trainer.train_dataset), 0)
    trainer.groups.resting[resting] = [trainer.state.global_step + 10, "solved"]
    inputs = [trainer.train_dataset[index] for index in (prompts_of(trainer, "flat", 1)[0],
                                                         prompts_of(trainer, "signal", 1)[0]) for _ in range(size)]
    generated, scored_round = [], trainer.scored_round
    monkeypatch.setattr(trainer, "scored_round", lambda rows: generated.append(rows) or scored_round(rows))
    torch.manual_seed(0)
    trainer._generate_and_score_completions(inputs)
    keys = [prompt_key(row["prompt"]) for row in generated[0]]
    assert resting not in keys and len(set(keys[:size])) == 1 and keys[size:] == [other] * size
    assert trainer._metrics["train"]["groups/swapped"][-1] == 1


def test_a_curriculum_with_every_prompt_resting_says_so_once(tiny_trl_trainer, caplog):
    import logging

    import torch

    trainer, size = tiny_trl_trainer, tiny_trl_trainer.num_generations
    prompts = len(trainer.train_dataset)
    trainer.groups = GroupPolicy("keep", 2, 10, 0, prompts, 0)
    for index in range(prompts):
        trainer.groups.resting[prompt_key(trainer.train_dataset[index]["prompt"])] = [
            trainer.state.global_step + 10, "solved"]
    inputs = [trainer.train_dataset[index] for index in (0, 1) for _ in range(size)]
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            trainer._generate_and_score_completions(inputs)
    said = [record.getMessage() for record in caplog.records if "every training prompt is resting" in
            record.getMessage()]
    assert len(said) == 1 and f"({prompts} solved, 0 hopeless, of {prompts})" in said[0]


RESUMED_FLAGS = ["--quick-test", "--max-steps", "6", "--save-steps", "3", "--eval-steps", "6", "--logging-steps", "1",
                 "--save-total-limit", "none", "--reward-fn", FLAT_REWARD, "--zero-variance-groups", "resample",
                 "--curriculum-solved-rest", "2", "--curriculum-hopeless-rest", "1"]
DECISIONS = ("groups/flat", "groups/dropped", "groups/resampled", "groups/extra_completions", "groups/swapped",
             "curriculum/resting_solved", "curriculum/resting_hopeless", "reward")


def test_a_resumed_run_takes_the_same_decisions(tmp_path):
    straight = tmp_path / "straight"
    assert run_main(*RESUMED_FLAGS, "--output-dir", str(straight)).returncode == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    for name in ("checkpoint-6", "final_model"):
        shutil.rmtree(resumed / name)
    result = run_main(*RESUMED_FLAGS, "--output-dir", str(resumed), "--resume-from-checkpoint",
                      str(resumed / "checkpoint-3"))
    assert result.returncode == 0, result.stderr[-3000:]

    def decisions(run):
        history = json.loads((run / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
        return [{name: entry.get(name) for name in DECISIONS} for entry in history if "groups/flat" in entry]

    before, after = decisions(straight), decisions(resumed)
    assert len(before) == 6 and before[3:] == after[3:]
    assert sum(entry["groups/resampled"] for entry in before) > 0  # the steps did resample
    state = json.loads((straight / "checkpoint-6" / "groups_state.json").read_text())
    assert state == json.loads((resumed / "checkpoint-6" / "groups_state.json").read_text()) and state["resting"]
