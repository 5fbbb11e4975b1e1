"""One run per output dir: a used dir is refused, replaced or continued as asked, and a lock keeps two live runs
apart without letting a dead run's lock block forever."""

import json
import os
import subprocess
import sys

import pytest

from conftest import run_main
from grpo_tool.errors import UserError
from grpo_tool.run_dir import LOCK_FILE, DirectoryLock

SHORT = ["--quick-test", "--max-steps", "2", "--eval-steps", "2", "--save-steps", "2"]


@pytest.fixture(scope="module")
def used_dir(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("used") / "out"
    result = run_main(*SHORT, "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    (output_dir / "my_notes.txt").write_text("mine")
    return output_dir


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_second_run_into_a_used_dir_is_refused_before_anything_is_written(used_dir):
    before = snapshot(used_dir)
    result = run_main(*SHORT, "--max-steps", "3", "--output-dir", str(used_dir))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("error: output dir")
    assert "--overwrite-output-dir" in last and "--resume-from-checkpoint latest" in last and "checkpoint-2" in last
    assert snapshot(used_dir) == before


def test_overwrite_replaces_the_run_and_keeps_other_files(used_dir, tmp_path):
    copy = tmp_path / "out"
    subprocess.run(["cp", "-r", str(used_dir), str(copy)], check=True)
    (copy / "checkpoint-2" / "marker").write_text("old")
    result = run_main(*SHORT, "--max-steps", "4", "--save-steps", "4", "--output-dir", str(copy),
                      "--overwrite-output-dir")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (copy / "checkpoint-2").exists() and (copy / "checkpoint-4").is_dir()
    assert json.loads((copy / "final_model" / "trainer_state.json").read_text())["global_step"] == 4
    assert (copy / "my_notes.txt").read_text() == "mine"
    assert not (copy / LOCK_FILE).exists()


def test_resume_continues_a_used_dir(used_dir, tmp_path):
    copy = tmp_path / "out"
    subprocess.run(["cp", "-r", str(used_dir), str(copy)], check=True)
    result = run_main(*SHORT, "--max-steps", "4", "--output-dir", str(copy), "--resume-from-checkpoint", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done: 4 steps" in result.stdout


def test_a_live_runs_lock_stops_a_second_run_at_once(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        output_dir = tmp_path / "out"
        output_dir.mkdir()
        (output_dir / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                                        "started": "just now"}))
        result = run_main(*SHORT, "--output-dir", str(output_dir))
        assert result.returncode == 2
        assert f"in use by another run (process {sleeper.pid}" in result.stderr.strip().splitlines()[-1]
        assert sorted(p.name for p in output_dir.iterdir()) == [LOCK_FILE]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_runs_lock_is_taken_over(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / LOCK_FILE).write_text(json.dumps({"pid": int(finished.stdout), "host": os.uname().nodename}))
    result = run_main(*SHORT, "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (output_dir / LOCK_FILE).exists()


def test_the_lock_removes_a_directory_it_made_and_nothing_else_filled(tmp_path):
    with DirectoryLock(tmp_path / "new") as lock:
        assert lock.path.is_file()
        with pytest.raises(UserError, match="in use by another run"):
            DirectoryLock(tmp_path / "new").acquire()
    assert not (tmp_path / "new").exists()


def test_a_run_that_stopped_before_its_first_checkpoint_is_not_offered_a_resume(used_dir, tmp_path):
    copy = tmp_path / "out"
    subprocess.run(["cp", "-r", str(used_dir), str(copy)], check=True)
    subprocess.run(["rm", "-r", str(copy / "checkpoint-2"), str(copy / "final_model")], check=True)
    last = run_main(*SHORT, "--output-dir", str(copy)).stderr.strip().splitlines()[-1]
    assert "stopped before its first checkpoint" in last and "--overwrite-output-dir" in last
    assert "--resume-from-checkpoint" not in last


def test_a_resume_applies_new_intervals_and_refuses_a_new_learning_rate(used_dir, tmp_path):
    copy = tmp_path / "out"
    subprocess.run(["cp", "-r", str(used_dir), str(copy)], check=True)
    refused = run_main(*SHORT, "--max-steps", "4", "--learning-rate", "0.01", "--output-dir", str(copy),
                       "--resume-from-checkpoint", "latest")
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 2 and "learning_rate=0.003, and this run gives learning_rate=0.01" in last
    result = run_main(*SHORT, "--max-steps", "4", "--logging-steps", "1", "--output-dir", str(copy),
                      "--resume-from-checkpoint", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((copy / "final_model" / "trainer_state.json").read_text())
    # The checkpoint said every 2 steps; the run (and its record) say 1, and 1 is what was used.
    assert state["logging_steps"] == 1
    assert {3, 4} <= {entry["step"] for entry in state["log_history"] if "loss" in entry}
    record = json.loads((copy / "run_record.json").read_text())
    assert record["config"]["logging_steps"] == 1 and record["trl_arguments"]["logging_steps"] == 1


def test_a_failed_run_removes_the_empty_folders_it_made(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{oops\n')
    result = run_main(*SHORT, "--custom-data", str(bad), "--output-dir", str(tmp_path / "a" / "b" / "c"),
                      "--generation-log-dir", str(tmp_path / "logs" / "here"))
    assert result.returncode == 2 and "bad.jsonl line 2" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.jsonl"]


def test_a_leading_tilde_is_the_home_folder_in_every_path_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data.jsonl").write_text("".join(f'{{"prompt": "q{i}?"}}\n' for i in range(20)))
    (tmp_path / "run.json").write_text(json.dumps({"output_dir": "~/runs/first", "custom_data": "~/data.jsonl"}))
    result = run_main("--quick-test", "--plan", "--config", "~/run.json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "first" / "plan.json").is_file()


def test_another_runs_checkpoint_is_not_resumed_into_a_used_dir(used_dir, tmp_path):
    copy = tmp_path / "out"
    subprocess.run(["cp", "-r", str(used_dir), str(copy)], check=True)
    (copy / "checkpoint-2").rename(tmp_path / "checkpoint-2")  # now another dir's checkpoint
    before = snapshot(copy)
    last = run_main(*SHORT, "--max-steps", "4", "--output-dir", str(copy), "--resume-from-checkpoint",
                    str(tmp_path / "checkpoint-2")).stderr.strip().splitlines()[-1]
    assert "is another run's: resuming it there would mix the two runs" in last
    assert snapshot(copy) == before


def test_an_output_dir_inside_the_data_folder_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0.jsonl").write_text("".join(f'{{"prompt": "q{i}?"}}\n' for i in range(20)))
    last = run_main(*SHORT, "--custom-data", str(tmp_path / "data"), "--output-dir",
                    str(tmp_path / "data" / "run")).stderr.strip().splitlines()[-1]
    assert "is inside the data folder" in last and not (tmp_path / "data" / "run").exists()
