"""Answer-checked data end to end on the tiny model: each row's columns reach the rewards beside its own prompt, in
training, evaluation, the reward check, --eval-only and the generation logs."""

import json
import re

import pytest

from conftest import run_main

ITEMS = 24
NO_ANSWER = {22, 23}  # rows without a reference: answer_match skips them


def code(item: int) -> int:
    return 1000 + 7 * item


# Scores 1 for a completion whose row's columns belong to its prompt, 0 for one that got another row's columns.
ALIGNED_REWARD = '''
import re

def aligned_reward(prompts, completions, answer, item, **kwargs):
    scores = []
    for prompt, reference, number in zip(prompts, answer, item):
        text = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
        named = int(re.search(r"Item (\\d+):", text).group(1))
        expected = None if number in NO_ANSWER else str(1000 + 7 * number)
        scores.append(1.0 if named == number and reference == expected else 0.0)
    return scores
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("verifiable")
    rows = [{"question": f"Item {k}: what is its code?",
             "answer": None if k in NO_ANSWER else f"The code of item {k} is {code(k)}.\n#### {code(k)}", "item": k}
            for k in range(ITEMS)]
    (root / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (root / "aligned.py").write_text(f"NO_ANSWER = {NO_ANSWER!r}\n{ALIGNED_REWARD}", encoding="utf-8")
    return root


def common_flags(root) -> list[str]:
    # A held-out tenth of 24 rows is 2 prompts; with a group of 4 every evaluation batch of 8 holds both.
    return ["--quick-test", "--custom-data", str(root / "items.jsonl"), "--reward-fn",
            f"{root / 'aligned.py'}:aligned_reward", "--reward-config", "verifiable"]


@pytest.fixture(scope="module")
def trained(workspace):
    output_dir = workspace / "out"
    result = run_main(*common_flags(workspace), "--max-steps", "6", "--logging-steps", "1", "--eval-steps", "3",
                      "--save-steps", "6", "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def test_training_and_evaluation_give_each_completion_its_own_rows_columns(trained):
    history = json.loads((trained / "final_model" / "trainer_state.json").read_text())["log_history"]
    train = [entry for entry in history if "rewards/aligned_reward/mean" in entry]
    evaluations = [entry for entry in history if "eval_rewards/aligned_reward/mean" in entry]
    assert len(train) == 6 and len(evaluations) == 2
    assert all(entry["rewards/aligned_reward/mean"] == 1.0 for entry in train), train
    assert all(entry["eval_rewards/aligned_reward/mean"] == 1.0 for entry in evaluations), evaluations
    # answer_match ran beside it, under its own name.
    assert all("rewards/answer_match/mean" in entry for entry in train)
    log = (trained / "grpo_training.log").read_text(encoding="utf-8")
    assert "rewards: answer_match (1.0), aligned_reward (1.0); reward config verifiable" in log
    assert re.search(r"answer_match: 2 of 2\d training prompts have no reference answer in 'answer'", log)


def test_generation_logs_record_the_columns_beside_each_prompt(trained):
    report = (trained / "report.html").read_text(encoding="utf-8")
    for path in sorted((trained / "generation_logs").glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8")):
            item = int(re.search(r"Item (\d+):", entry["prompt"]).group(1))
            assert entry["columns"]["item"] == item
            assert entry["columns"]["answer"] == (None if item in NO_ANSWER else str(code(item)))
            assert entry["columns"]["solution"] is None or entry["columns"]["solution"].endswith(f"#### {code(item)}")
            assert entry["rewards"]["aligned_reward"] == 1.0
            assert f"item: {item}" in report  # the report shows them under the prompt


def test_eval_only_passes_the_columns_too(trained, workspace):
    result = run_main(*common_flags(workspace), "--eval-only", "--output-dir", str(trained))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((trained / "evaluation" / "eval_metrics.json").read_text(encoding="utf-8"))
    assert metrics["eval_rewards/aligned_reward/mean"] == 1.0
    log = json.loads((trained / "evaluation" / "generation_log_step_6.json").read_text(encoding="utf-8"))
    assert log and all(entry["rewards"]["aligned_reward"] == 1.0 for entry in log)


def test_the_reward_check_passes_the_columns_too(workspace):
    output_dir = workspace / "check"
    result = run_main(*common_flags(workspace), "--check-rewards", "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output_dir / "reward_check.json").read_text(encoding="utf-8"))
    aligned = report["groups"]["components"]["aligned_reward"]
    assert (aligned["mean"], aligned["exceptions"], aligned["first_exception"]) == (1.0, 0, None)
    # Each row's reference, scored as a completion beside a wrong answer: answer_match tells them apart;
    # aligned_reward checks the columns, not the answer, and gives both 1.
    references = report["references"]
    assert (references["rows"], references["column"]) == (20, "answer")  # 22 training rows, 2 without an answer
    match, aligned = references["components"]["answer_match"], references["components"]["aligned_reward"]
    assert (match["right"], match["wrong"], aligned["right"], aligned["wrong"]) == (1.0, 0.0, 1.0, 1.0)
    assert re.search(r"answer_match +1\.000 +0\.000 +as written\n", result.stdout)
    assert re.search(r"aligned_reward +1\.000 +1\.000 +as written +\(alike: it does not judge the answer\)",
                     result.stdout)
    assert "gives the reference answer" not in result.stdout


def test_a_reward_that_needs_a_missing_column_is_shown_with_its_exception(workspace, tmp_path):
    needs = tmp_path / "needs.py"
    needs.write_text("def correctness_reward_func(prompts, completions, label, **kwargs):\n    return [0.0]\n")
    output_dir = tmp_path / "check"
    result = run_main("--quick-test", "--custom-data", str(workspace / "items.jsonl"), "--reward-fn",
                      f"{needs}:correctness_reward_func", "--check-rewards", "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("TypeError: correctness_reward_func() missing 1 required positional argument: 'label', calling "
            "correctness_reward_func(prompts, completions, label, **kwargs) with completions, prompts, answer, item, "
            "solution, on sample 0") in result.stdout
    groups = json.loads((output_dir / "reward_check.json").read_text())["groups"]
    failed = groups["components"]["correctness_reward_func"]
    assert (failed["exceptions"], failed["first_exception"]["type"], failed["first_exception"]["sample"]) == (
        8, "TypeError", 0)  # the 2 evaluation prompts x 4


def test_data_mistakes_come_before_the_model_loads(tmp_path):
    prompts_only = tmp_path / "prompts.jsonl"
    prompts_only.write_text("".join(json.dumps({"prompt": f"q{k}", "topic": "t"}) + "\n" for k in range(4)))
    # The model does not exist; had it been loaded first, that would be the error.
    result = run_main("--model", "nobody/no-such-model", "--custom-data", str(prompts_only), "--reward-config",
                      "verifiable", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: answer_match checks each completion against the row's reference answer, in one of the columns answer, "
        "solution, output, ground_truth, reference, but the data has topic: set answer_match.reference_column in the "
        "reward config to the column that holds it")
    assert not (tmp_path / "o").exists()
