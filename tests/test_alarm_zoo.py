"""The alarm zoo (bench/alarm_zoo.py) on real tiny-model runs: each broken run raises its alarm and nothing else,
each healthy run raises nothing, and the alarms and the step each is first raised at are the same whether the run
logs every step or every ten, since the alarms judge every step."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT, run_main

sys.path.append(str(ROOT / "bench"))  # after the repository: bench/rewards.py must not hide rewards.py

from alarm_zoo import CASES, case_flags, judged, zoo_data, zoo_model

pytestmark = pytest.mark.slow
CADENCES = (1, 10)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    return zoo_model(folder / "model"), zoo_data(folder / "prompts.jsonl"), folder


def train(zoo, name: str, cadence: int, *extra: str):
    model, data, folder = zoo
    output_dir = folder / f"{name}-{cadence}"
    result = run_main(*case_flags(name, model, data, output_dir, cadence), *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


@pytest.mark.parametrize("name", list(CASES))
def test_each_run_of_the_zoo_raises_its_alarm_and_no_other_at_both_cadences(zoo, name):
    raised = {cadence: judged(train(zoo, name, cadence)) for cadence in CADENCES}
    assert set(raised[1]) == CASES[name].expected, f"{name} ({CASES[name].what}) raised {raised[1]}"
    assert raised[10] == raised[1]  # the same alarms at the same steps


def test_a_step_with_every_group_dropped_logs_no_entropy_and_its_figures_are_kept(zoo):
    # Every group of the constant reward is flat and dropped: no token is in the loss, so nothing was measured.
    output_dir = zoo[2] / "constant_reward-1"
    if not output_dir.is_dir():
        output_dir = train(zoo, "constant_reward", 1)
    history = json.loads((output_dir / "checkpoint-40" / "trainer_state.json").read_text())["log_history"]
    training = [entry for entry in history if "reward" in entry]
    assert len(training) == 40 and all(entry.get("entropy") is None for entry in training)
    records = json.loads((output_dir / "checkpoint-40" / "step_records.json").read_text())
    assert [record["step"] for record in records] == list(range(1, 41))
    assert all(record["frac_reward_zero_std"] == 1.0 and "entropy" not in record for record in records)


def test_a_resumed_run_judges_the_steps_before_its_checkpoint(zoo):
    # Stopped at step 6 (no alarm yet: ten flat steps make one), then resumed: the alarm comes at step 10, as in a
    # run that never stopped, because the checkpoint kept steps 1 to 6.
    output_dir = train(zoo, "constant_reward", 5, "--max-steps", "6", "--save-steps", "6")
    assert judged(output_dir) == {}
    train(zoo, "constant_reward", 5, "--resume-from-checkpoint", "latest")
    assert judged(output_dir) == {"no_learning_signal": 10}
