"""Nothing lost: signals and kills at several moments of real training runs, each resumed to the same end; every
JSON file on disk parses afterwards; several processes train and only the main one writes; secrets stay out."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from children import Child, run_child

from conftest import ROOT, run_main
from generation_logger import logged_steps

RUN = {"max_steps": 40, "eval_steps": 10, "save_steps": 5, "logging_steps": 5}


def start(output_dir: Path, config: Path, *more: str) -> Child:
    return Child("--quick-test", "--config", str(config), "--output-dir", str(output_dir), *more)


def wait_for(process: subprocess.Popen, condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before the moment to stop it"
        assert time.monotonic() < deadline
        time.sleep(0.005)


def unparsable_json(directory: Path) -> list[Path]:
    """JSON files that do not parse, leaving out scratch space: .staging/ (checkpoints being written) and the
    temporary files of atomic writes, which the tool never reads."""
    bad = []
    for path in directory.rglob("*.json"):
        if ".staging" in path.parts:
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            bad.append(path)
    return bad


@pytest.fixture
def run_config(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(RUN))
    return path


# Moments to kill a run at, in the order a run reaches them; each kill is followed by a resume from the latest
# checkpoint, which the next moment then interrupts again.
KILL_MOMENTS = {
    "as the first checkpoint lands": lambda out: (out / "checkpoint-5").is_dir(),
    "while a later checkpoint is staged": lambda out: (out / ".staging").is_dir() and (out / "checkpoint-10").is_dir(),
    "after the third evaluation": lambda out: (out / "generation_logs" / "generation_log_step_30.json").exists(),
}


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_the_last_checkpoint_usable(tmp_path, run_config):
    output_dir = tmp_path / "out"
    for moment, reached in KILL_MOMENTS.items():
        process = start(output_dir, run_config, *(["--resume-from-checkpoint", "latest"] if
                                                  (output_dir / "checkpoint-5").is_dir() else []))
        wait_for(process, lambda reached=reached: reached(output_dir))
        process.kill()
        process.communicate()
        assert unparsable_json(output_dir) == [], moment
    resumed = run_child("--quick-test", "--config", str(run_config), "--output-dir", str(output_dir),
                        "--resume-from-checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "done: 40 steps" in resumed.stdout
    assert logged_steps(output_dir / "generation_logs") == [10, 20, 30, 40]
    assert unparsable_json(output_dir) == []


@pytest.mark.slow
def test_sigterm_saves_and_says_how_to_resume(tmp_path, run_config):
    output_dir = tmp_path / "out"
    process = start(output_dir, run_config)
    wait_for(process, lambda: (output_dir / "checkpoint-5").is_dir())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("stopped at step") and "--resume-from-checkpoint" in last_line
    checkpoint = last_line.rsplit(" ", 1)[-1]
    assert Path(checkpoint).is_dir() and (Path(checkpoint) / "trainer_state.json").is_file()
    resumed = run_child("--quick-test", "--config", str(run_config), "--output-dir", str(output_dir),
                        "--resume-from-checkpoint", checkpoint)
    assert resumed.returncode == 0 and "done: 40 steps" in resumed.stdout


def test_an_incomplete_checkpoint_is_refused_and_latest_skips_it(tmp_path, run_config):
    output_dir = tmp_path / "out"
    assert run_main("--quick-test", "--config", str(run_config), "--output-dir", str(output_dir)).returncode == 0
    broken = output_dir / "checkpoint-99"
    broken.mkdir()
    (broken / "trainer_state.json").write_text('{"global_step": 9')  # cut off mid-write
    result = run_main("--quick-test", "--config", str(run_config), "--output-dir", str(output_dir),
                      "--resume-from-checkpoint", str(broken))
    assert result.returncode == 2 and "is incomplete" in result.stderr.strip().splitlines()[-1]
    from grpo_tool.checkpoints import resolve_checkpoint

    latest = resolve_checkpoint("latest", str(output_dir))
    assert Path(latest).name == "checkpoint-40"


LEAVING = """
import atexit, sys
import torch.distributed
from grpo_tool.launch import leave
atexit.register(lambda: print("exit handler ran"))
print("unflushed", end="")
leave(int(sys.argv[1]))
"""


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_a_process_leaves_with_its_status_its_output_and_its_exit_handlers(world_size):
    # One of several processes leaves without the interpreter's teardown (gloo's threads abort in it); what a normal
    # exit does for the user (exit handlers, buffered output, the status) still happens.
    result = subprocess.run([sys.executable, "-c", LEAVING, "3"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT, env={**os.environ, "WORLD_SIZE": world_size, "RANK": "1"})
    assert result.returncode == 3 and result.stdout == "unflushedexit handler ran\n", result.stderr


@pytest.mark.slow
def test_two_processes_train_and_only_the_main_one_writes(tmp_path):
    # Groups of 4 in batches of 6 per process: the middle group of each step lies across both processes. A reward
    # with flat groups, resampled, with a curriculum: every process must take the same decisions at every step (the
    # run checks it, and fails if not), also after the resume. Prompts shared (asked for: the tiny model is under the
    # size at which they are by default), inside DistributedDataParallel's forward.
    settings = {"eval_steps": 5, "save_steps": 5, "logging_steps": 5, "per_device_train_batch_size": 6,
                "reward_functions": [f"{ROOT / 'tests/fixtures/custom_rewards.py'}:flat_for_some"],
                "zero_variance_groups": "resample", "curriculum_solved_rest": 3, "share_prompts": True}
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"max_steps": 10, **settings}))
    output_dir = tmp_path / "out"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "config/accelerate/cpu_2proc.yaml"), "--main_process_port", "29531",
              str(ROOT / "train_grpo.py"), "--quick-test", "--output-dir", str(output_dir)]
    first = subprocess.run([*launch, "--config", str(config)], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("done: 10 steps") == 1
    assert {p.name for p in (output_dir / "checkpoint-10").glob("rng_state_*.pth")} == {"rng_state_0.pth",
                                                                                          "rng_state_1.pth"}
    assert logged_steps(output_dir / "generation_logs") == [5, 10]
    log = (output_dir / "grpo_training.log").read_text(encoding="utf-8")
    assert log.count("logging to") == 1 and log.count("step 10: ") >= 1
    assert "shared prompts: on in generation" in log
    assert log.count("global batch: 12 completions a step (6 per device x 1 accumulation step x 2 processes) = 3 "
                     "prompts x a group of 4") == 1  # stated once, by the main process
    state = json.loads((output_dir / "checkpoint-10" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "groups/flat" in entry]
    assert len(logged) == 2 and sum(entry["groups/resampled"] for entry in logged) > 0
    assert (output_dir / "checkpoint-10" / "groups_state.json").is_file()
    config.write_text(json.dumps({"max_steps": 15, **settings}))
    resumed = subprocess.run([*launch, "--config", str(config), "--resume-from-checkpoint", "latest"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("done: 15 steps") == 1
    assert logged_steps(output_dir / "generation_logs") == [5, 10, 15]


@pytest.mark.slow
@pytest.mark.parametrize("mistake", [["--batch-size", "0"], ["--batch-siz", "8"],
                                     ["--batch-size", "3"]])  # 6 a step on 2 processes, in groups of 4
def test_a_mistake_under_the_launcher_is_one_line_from_the_main_process(tmp_path, mistake):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "config/accelerate/cpu_2proc.yaml"), "--main_process_port", "29533",
              str(ROOT / "train_grpo.py"), "--quick-test", "--output-dir", str(tmp_path / "out")]
    result = subprocess.run([*launch, *mistake], capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--batch-size" in errors[0], result.stderr[-3000:]
    assert mistake[1] != "3" or "on 2 process(es) samples 6 completions" in errors[0]  # the count across processes
    assert result.returncode == 1  # the launcher's own status for a failed process (README: several processes)
    assert f'File "{ROOT}' not in result.stderr  # the other process, stopped by the launcher, stops quietly
    assert not (tmp_path / "out").exists()


def test_ctrl_c_during_the_last_evaluation_is_finished_by_the_advised_resume(tmp_path):
    from transformers import TrainerCallback

    from config import build_config
    from conftest import run_main
    from grpo_trainer import GRPOTrainer, TrainingInterrupted

    class CtrlCInLastEvaluation(TrainerCallback):
        def on_prediction_step(self, args, state, control, **kwargs):
            if state.global_step == state.max_steps and not getattr(self, "sent", False):
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)

    flags = ["--quick-test", "--max-steps", "6", "--eval-steps", "3", "--save-steps", "3", "--output-dir",
             str(tmp_path / "out")]
    config = build_config(mode="quick_test", overrides={"max_steps": 6, "eval_steps": 3, "save_steps": 3,
                                                        "output_dir": str(tmp_path / "out")})
    with pytest.raises(TrainingInterrupted) as stopped:
        GRPOTrainer(config, callbacks=[CtrlCInLastEvaluation()]).train()
    assert stopped.value.step == 6 and stopped.value.checkpoint.endswith("checkpoint-6")
    resumed = run_main(*flags, "--resume-from-checkpoint", stopped.value.checkpoint)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "done: 6 steps" in resumed.stdout and not (tmp_path / "out" / "checkpoint-7").exists()
    assert (tmp_path / "out" / "final_model" / "config.json").is_file()


@pytest.mark.slow
def test_secrets_never_reach_the_files(tmp_path):
    secrets = {"WANDB_API_KEY": "wandb-secret-0123456789abcdef", "HF_TOKEN": "hf_secretTOKEN0123456789"}
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"max_steps": 4, "eval_steps": 2, "save_steps": 4}))
    env = {**os.environ, **secrets, "WANDB_MODE": "offline"}
    result = run_child("--quick-test", "--config", str(config), "--wandb-project", "secret-test", "--output-dir",
                       str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for value in secrets.values():
                assert value.encode() not in content, f"{value} found in {path}"


def test_every_shipped_accelerate_config_loads():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"ddp.yaml": "MULTI_GPU", "cpu_2proc.yaml": "MULTI_GPU", "deepspeed_zero2.yaml": "DEEPSPEED",
                "deepspeed_zero3.yaml": "DEEPSPEED", "fsdp.yaml": "FSDP"}
    shipped = {path.name: path for path in (ROOT / "config" / "accelerate").glob("*.yaml")}
    assert set(shipped) == set(expected)
    for name, path in shipped.items():
        assert load_config_from_file(str(path)).distributed_type.value == expected[name]
    zero3 = load_config_from_file(str(shipped["deepspeed_zero3.yaml"]))
    assert zero3.deepspeed_config["zero_stage"] == 3
    for name in ("deepspeed_zero2.yaml", "deepspeed_zero3.yaml"):  # the same command on every machine
        assert load_config_from_file(str(shipped[name])).deepspeed_config["deepspeed_multinode_launcher"] == "standard"
    assert load_config_from_file(str(shipped["fsdp.yaml"])).fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


@pytest.mark.slow
def test_wandb_offline_and_tensorboard_write_runs_and_no_wandb_writes_none(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"max_steps": 2, "eval_steps": 2, "save_steps": 2}))
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc: no W&B credentials
    logged = run_child("--quick-test", "--config", str(config), "--wandb-project", "demo", "--tensorboard",
                       "--output-dir", str(tmp_path / "logged"), env=env)
    assert logged.returncode == 0, logged.stderr[-3000:]
    assert "logged offline" in logged.stderr
    assert list((tmp_path / "logged" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert list((tmp_path / "logged" / "runs").glob("*/events.out.tfevents.*"))
    quiet = run_child("--quick-test", "--config", str(config), "--no-wandb", "--output-dir", str(tmp_path / "quiet"),
                      env=env, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not list(tmp_path.rglob("quiet/wandb")) and not (tmp_path / "wandb").exists()


def test_ctrl_c_while_the_model_loads_prints_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from conftest import run_main
    from grpo_trainer import GRPOTrainer

    def interrupted(self, path=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(GRPOTrainer, "load_model", interrupted)
    result = run_main("--quick-test", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 130
    lines = result.stderr.strip().splitlines()
    # The data is read before the model loads, so its start-up lines come first; the interruption is one line.
    assert lines[-1] == "interrupted: stopped by Ctrl-C or SIGTERM outside training; nothing was left half-written"
    assert [line.split(":")[0] for line in lines[:-1]] == ["rewards", "data", "backend"], lines
    assert not (tmp_path / "out").exists()


def test_a_second_ctrl_c_during_a_save_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    import trl

    from conftest import run_main

    def cut_off(self, model, trial):
        staged = Path(self.args.output_dir) / ".staging" / f"checkpoint-{self.state.global_step}"
        staged.mkdir(parents=True)
        (staged / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(trl.GRPOTrainer, "_save_checkpoint", cut_off)
    output_dir = tmp_path / "out"
    result = run_main("--quick-test", "--max-steps", "4", "--save-steps", "2", "--output-dir", str(output_dir))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 130 and last.startswith("interrupted: stopped at once at step 2")
    assert "no half-written checkpoint" in last
    assert not list(output_dir.glob("checkpoint-*")) and not list((output_dir / ".staging").glob("*"))
    assert last in (output_dir / "grpo_training.log").read_text(encoding="utf-8")
