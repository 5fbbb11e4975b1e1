"""The evaluation people report: pass@k and maj@k against hand-computed cases, the figures a run logs at its
evaluations, the best checkpoint by pass@1, the comparison of a run's checkpoints, --eval-data, the evaluation's
own random state, and --plan's evaluation time."""

import json
import math
from pathlib import Path

import pytest

from conftest import run_main
from grpo_tool.held_out import AnswerCheck, group_scores, majority_score, pass_at_k

# A run whose evaluations grade answers (answer_match) with a tolerance so wide that any number is right (a tolerance
# applies to references that are not integers): the random tiny model writes numbers now and then, so the figures are
# neither all 0 nor all 1.
K = 4
ROWS = [{"prompt": f"How many litres are in {n} jugs of 1.5 litres?", "answer": f"{1.5 * n}"} for n in range(3, 51, 2)]


def test_pass_at_k_is_the_unbiased_estimator():
    # n = 5 samples, c = 2 right: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass@3 = 1 - 1/10.
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(5, 2, 4) == 1.0 and pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_majority_vote_groups_equal_answers_and_shares_ties():
    assert majority_score([("42", True), ("42.0", True), ("41", False)]) == 1.0  # one answer, two spellings
    assert majority_score([("41", False), ("41", False), ("42", True)]) == 0.0
    assert majority_score([("7", True), ("8", False)]) == 0.5  # a tie between a right and a wrong answer
    assert majority_score([("7", True), ("8", False), ("9", False)]) == pytest.approx(1 / 3)
    assert majority_score([("7", True), ("7", True), ("8", False), ("8", False), ("9", False)]) == 0.5
    assert majority_score([(None, False), (None, False), ("5", True)]) == 1.0  # no answer, no vote
    assert majority_score([(None, False), (None, False)]) == 0.0


def test_group_scores_per_prompt_and_rows_without_a_reference():
    verdicts = [("6", True), ("6", True), ("5", False), ("6", True),  # 3 of 4 right
                ("1", False), ("2", False), ("2", False), ("9", True),  # 1 of 4, the majority wrong
                (None, None), (None, None), (None, None), (None, None)]  # no reference: no score
    assert group_scores(verdicts, 4) == {"pass@1": [0.75, 0.25], "pass@4": [1.0, 1.0], "maj@4": [1.0, 0.0]}
    assert group_scores([("3", True), ("4", False)], 1) == {"pass@1": [1.0, 0.0], "maj@1": [1.0, 0.0]}


def test_an_answer_is_graded_as_answer_match_grades_it():
    check = AnswerCheck("answer")
    assert check.verdict("3 boxes of 4 make \\boxed{12}.", "12") == ("12", True)
    assert check.verdict("#### 1,000", "1000") == ("1,000", True)
    assert check.verdict("It is 13.", "#### 12")[1] is False
    assert check.verdict("anything", None) == (None, None)


def test_best_metric_names_follow_the_runs_samples():
    from grpo_tool.errors import UserError
    from grpo_tool.metrics import best_metric

    assert best_metric("pass@1", [], ["pass@1", "pass@4", "maj@4"]) == ("pass@1", True)
    assert best_metric("eval_maj@4", [], ["pass@1", "pass@4", "maj@4"]) == ("maj@4", True)
    with pytest.raises(UserError, match=r"log pass@1, pass@4, maj@4 \(K is eval_samples\)"):
        best_metric("pass@8", [], ["pass@1", "pass@4", "maj@4"])
    with pytest.raises(UserError, match="does not check answers"):
        best_metric("pass@1", [], [])


@pytest.fixture(scope="module")
def checked_run(tmp_path_factory):
    """A tiny run on answer-checked data: K samples per held-out prompt, a checkpoint at each evaluation, the best
    by pass@1; then --eval-only --eval-checkpoints all over it."""
    folder = tmp_path_factory.mktemp("checked")
    data, held_out = folder / "train.jsonl", folder / "held_out.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS[:16]))
    held_out.write_text("".join(json.dumps(row) + "\n" for row in ROWS[16:]))
    rewards = folder / "rewards.json"
    rewards.write_text(json.dumps({"accuracy_weight": 0, "length_weight": 0, "quality_weight": 0,
                                   "answer_match_weight": 1.0, "answer_match": {"tolerance": 1e12}}))
    common = ["--quick-test", "--custom-data", str(data), "--eval-data", str(held_out), "--reward-config",
              str(rewards), "--eval-samples", str(K), "--output-dir", str(folder / "out")]
    trained = run_main(*common, "--max-steps", "4", "--eval-steps", "2", "--save-steps", "2", "--learning-rate",
                       "0.05", "--metric-for-best-model", "pass@1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    compared = run_main(*common, "--eval-only", "--eval-checkpoints", "all")
    assert compared.returncode == 0, compared.stderr[-3000:]
    return folder / "out", trained, compared


def evaluations(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / "final_model" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "eval_reward" in entry]


def test_a_run_logs_pass_and_majority_at_each_evaluation(checked_run):
    output_dir, trained, _ = checked_run
    logged = evaluations(output_dir)
    assert [entry["step"] for entry in logged] == [2, 4]
    for entry in logged:
        # pass@1 is the share of right samples: what answer_match's mean says of the same completions.
        assert entry["eval_pass@1"] == pytest.approx(entry["eval_rewards/answer_match/mean"])
        assert entry["eval_pass@1"] <= entry[f"eval_pass@{K}"] and entry[f"eval_maj@{K}"] <= entry[f"eval_pass@{K}"]
    assert any(0 < entry["eval_pass@1"] < 1 for entry in logged), logged
    assert f"pass@1 {logged[0]['eval_pass@1']:.3f}, pass@{K} " in trained.stdout + trained.stderr  # the console line
    assert "eval_pass@1=" in (output_dir / "grpo_training.log").read_text()
    assert "Held-out answers right" in (output_dir / "report.html").read_text()
    record = json.loads((output_dir / "run_record.json").read_text())
    assert record["prompts"] == {"train": 16, "eval": len(ROWS) - 16}  # --eval-data: every training row trains


def test_the_best_checkpoint_is_the_one_with_the_highest_pass_at_1(checked_run):
    output_dir, _, _ = checked_run
    logged = evaluations(output_dir)
    best = max(logged, key=lambda entry: entry["eval_pass@1"])  # the first of equals, as transformers keeps it
    state = json.loads((output_dir / "final_model" / "trainer_state.json").read_text())
    assert state["best_metric"] == best["eval_pass@1"]
    assert Path(state["best_model_checkpoint"]).name == f"checkpoint-{best['step']}"


def test_the_comparison_table_holds_the_starting_model_and_every_checkpoint(checked_run):
    output_dir, _, compared = checked_run
    table = json.loads((output_dir / "evaluation" / "comparison.json").read_text())
    assert [(row["model"], row["step"]) for row in table["models"]] == [("base", 0), ("checkpoint-2", 2),
                                                                         ("checkpoint-4", 4)]
    assert table["eval_samples"] == K and table["prompts"] == len(ROWS) - 16
    printed = compared.stdout.strip().splitlines()
    assert printed[0].startswith("compared 3 models on the same held-out prompts")
    assert printed[1].split()[:6] == ["model", "step", "reward", "pass@1", f"pass@{K}", f"maj@{K}"]
    assert [line.split()[0] for line in printed[2:]] == ["base", "checkpoint-2", "checkpoint-4"]
    # Each evaluation draws its own seeded random numbers: a checkpoint scores at --eval-only what it scored when
    # the run evaluated it, whatever training's random state was by then.
    for entry, row in zip(evaluations(output_dir), table["models"][1:]):
        assert row["eval_pass@1"] == entry["eval_pass@1"] and row["eval_reward"] == entry["eval_reward"]
    for label in ("base", "checkpoint-2", "checkpoint-4"):
        assert (output_dir / "evaluation" / label / "eval_metrics.json").is_file()


def test_chosen_steps_and_mistakes_in_them(checked_run, tmp_path):
    output_dir, _, _ = checked_run
    common = ["--quick-test", "--output-dir", str(output_dir)]
    missing = run_main(*common, "--eval-only", "--eval-checkpoints", "2,6")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"error: --eval-checkpoints: no complete checkpoint of step 6 in {output_dir} "
                                      "(it has 2, 4)")
    for flags, said in ((["--eval-checkpoints", "all"], "use it with --eval-only"),
                        (["--eval-only", "--eval-checkpoints", "two"], "must be all, or checkpoint steps"),
                        (["--eval-only", "--eval-checkpoints", "0"], "must be all, or checkpoint steps"),
                        (["--eval-only", "--eval-temperature", "0"], "--eval-temperature 0.0 must be above 0"),
                        (["--eval-data", str(tmp_path / "none.jsonl")], "--eval-data"),
                        (["--metric-for-best-model", "pass@1", "--save-steps", "20"], "does not check answers"),
                        (["--eval-group-size", "4"], "was renamed eval_samples")):
        result = run_main("--quick-test", "--output-dir", str(tmp_path / "run"), *flags)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and said in result.stderr, result.stderr
    empty = run_main("--quick-test", "--eval-only", "--eval-checkpoints", "all", "--output-dir", str(tmp_path / "x"))
    assert empty.returncode == 2 and "holds no checkpoint-N/ or final_model/" in empty.stderr
    assert not (tmp_path / "x" / "evaluation").exists()


def test_the_plan_counts_the_evaluation():
    from grpo_tool.plan.device import GB, Device
    from grpo_tool.plan.fitting import make_plan
    from grpo_tool.settings import GRPOConfig

    device = Device("cuda", 80 * GB, "H100", 989, 3.35, "test")

    def seconds(**settings) -> float:
        config = GRPOConfig(model_name="qwen2.5-7b", **{"max_eval_samples": 100, **settings})
        return make_plan(config, device, prompt=(200, "test")).seconds_per_evaluation

    assert seconds(eval_samples=8) == pytest.approx(2 * seconds(eval_samples=4), rel=0.05)
    assert seconds(eval_samples=4, max_eval_samples=0) == 0.0


def test_math_500_rows_are_answer_checked_data(tmp_path):
    from data_loader import convert_local_file
    from grpo_tool.held_out import answer_check_for
    from grpo_tool.reward_config import load_reward_config
    from rewards import rule_components

    path = tmp_path / "math500.jsonl"
    row = {"problem": "Simplify $\\frac{6}{8}$.", "solution": "Halve both: $\\boxed{\\frac{3}{4}}$.",
           "answer": "\\frac{3}{4}", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/2.json"}
    path.write_text(json.dumps(row) + "\n")
    rows = convert_local_file(path)
    assert rows[0]["prompt"] == "Simplify $\\frac{6}{8}$."
    verifiable = load_reward_config("verifiable")
    check = answer_check_for(rule_components(verifiable), verifiable["answer_match"], rows.column_names)
    assert check.column == "answer"
    assert check.verdict("So it is \\boxed{\\frac{6}{8}}.", rows[0]["answer"])[1] is True


@pytest.mark.slow
def test_two_processes_split_the_held_out_prompts_and_log_one_figure(checked_run, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    folder = checked_run[0].parent
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "config/accelerate/cpu_2proc.yaml"), "--main_process_port", "29533",
              str(ROOT / "train_grpo.py")]
    flags = ["--eval-only", "--quick-test", "--custom-data", str(folder / "train.jsonl"), "--eval-data",
             str(folder / "held_out.jsonl"), "--reward-config", str(folder / "rewards.json"), "--eval-samples", str(K),
             "--per-device-eval-batch-size", str(K), "--output-dir", str(tmp_path / "out")]
    result = subprocess.run([*launch, *flags], capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads((tmp_path / "out" / "evaluation" / "eval_metrics.json").read_text())
    # Each process graded its share; the verdicts gathered, every prompt's K samples counted once.
    assert measured["eval_pass@1"] == pytest.approx(measured["eval_rewards/answer_match/mean"])
    assert result.stdout.count("eval_pass@1") == 1 and f"eval_pass@{K}" in result.stdout


def test_an_evaluation_samples_at_its_temperature_from_its_own_random_state():
    from types import SimpleNamespace

    import torch

    from grpo_tool.trainer_hooks import evaluation_sampling

    trainer = SimpleNamespace(temperature=1.0, generation_config=SimpleNamespace(temperature=1.0))
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    with evaluation_sampling(trainer, 0.6, seed=5):
        assert trainer.temperature == 0.6 and trainer.generation_config.temperature == 0.6
        drawn = torch.rand(3)
    assert torch.equal(torch.rand(3), expected_next)  # training's random state as if no evaluation had run
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(3))  # the evaluation's own, seeded
    assert trainer.temperature == 1.0 and trainer.generation_config.temperature == 1.0
    with evaluation_sampling(trainer, None, seed=5):  # unset: the training temperature
        assert trainer.temperature == 1.0
