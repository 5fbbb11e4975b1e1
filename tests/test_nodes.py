"""Two machines, played by two launchers on this one (gloo, one process each, as `accelerate launch --num_machines 2`
runs them): the run trains, evaluates and writes one set of outputs; Ctrl-C on one machine stops both at the same
step with a checkpoint that both resume from; a machine that never joins ends the other in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from generation_logger import logged_steps

pytestmark = pytest.mark.slow

ACCELERATE = "accelerate.commands.launch"
OURS = "grpo_tool.accelerate_launch"  # accelerate's launcher, ending in one line


def node(rank: int, port: int, output_dir, *more: str, launcher: str = ACCELERATE, wait: int | None = None,
         config: list[str] = ("--multi_gpu",)):
    """One machine's command, as the README gives it (the rendezvous wait shortened where a test expects it)."""
    command = [sys.executable, "-m", launcher, *config, "--num_machines", "2", "--machine_rank", str(rank),
               "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "--rdzv_backend", "static", "--same_network", *(["--rdzv_conf", f"timeout={wait}"] if wait else []),
               str(ROOT / "train_grpo.py"), "--quick-test", "--output-dir", str(output_dir), *more]
    # A session of its own, like a terminal on another machine: Ctrl-C there reaches that launcher only.
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(*processes, timeout: float = 600) -> list[tuple[int, str, str]]:
    return [(process.wait(timeout=timeout), *process.communicate()) for process in processes]


def test_ctrl_c_on_one_machine_stops_both_and_both_resume_to_one_set_of_outputs(tmp_path):
    output_dir = tmp_path / "out"
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"max_steps": 20, "eval_steps": 5, "save_steps": 5, "logging_steps": 5}))
    main, other = (node(rank, 29541, output_dir, "--config", str(config), launcher=OURS) for rank in (0, 1))
    deadline = time.monotonic() + 300
    while not (output_dir / "checkpoint-5").is_dir():  # training has started on both
        assert main.poll() is None and other.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(other.pid, signal.SIGINT)  # Ctrl-C in the other machine's terminal
    (main_status, _, main_err), (other_status, _, other_err) = finish(main, other)
    assert (main_status, other_status) == (130, 130), main_err[-3000:] + other_err[-3000:]
    stopped = [line for line in main_err.splitlines() if line.startswith("stopped at step")]
    assert len(stopped) == 1 and "--resume-from-checkpoint" in stopped[0], main_err[-3000:]
    checkpoint = stopped[0].rsplit(" ", 1)[-1]
    step = int(checkpoint.rsplit("-", 1)[-1])
    assert 5 <= step < 20 and f"stopped at step {step};" in stopped[0]
    assert {path.name for path in (output_dir / f"checkpoint-{step}").glob("rng_state_*.pth")} == {
        "rng_state_0.pth", "rng_state_1.pth"}  # both machines stopped at that step and saved their part
    assert not (output_dir / ".staging").exists()

    # Resumed with accelerate's own launcher, exactly the command each machine ran, plus the resume flag.
    main, other = (node(rank, 29542, output_dir, "--config", str(config), "--resume-from-checkpoint", "latest")
                   for rank in (0, 1))
    (main_status, main_out, main_err), (other_status, other_out, other_err) = finish(main, other)
    assert (main_status, other_status) == (0, 0), main_err[-3000:] + other_err[-3000:]
    assert (main_out + other_out).count("done: 20 steps") == 1  # the main process alone narrates
    assert not [line for line in other_err.splitlines() if line.startswith(("error", "step", "global batch"))]
    assert logged_steps(output_dir / "generation_logs") == [5, 10, 15, 20]
    log = (output_dir / "grpo_training.log").read_text(encoding="utf-8")
    assert log.count("global batch: 16 completions a step (8 per device x 1 accumulation step x 2 processes)") == 2
    assert log.count("eval_reward") >= 4  # evaluations at 5, 10, 15 and 20, on both machines' shares
    record = json.loads((output_dir / "run_record.json").read_text())
    assert record["launch"] == {"processes": 2, "engine": "none", "machines": 2}
    assert (output_dir / "report.html").is_file() and (output_dir / "final_model").is_dir()
    state = json.loads((output_dir / "checkpoint-20" / "trainer_state.json").read_text())
    assert state["global_step"] == 20 and [entry["step"] for entry in state["log_history"]
                                           if "eval_reward" in entry] == [5, 10, 15, 20]


def test_two_machines_under_the_shipped_deepspeed_config_each_run_the_same_command(tmp_path):
    # deepspeed_zero2.yaml as shipped (its multi-machine launcher "standard": torch's, as for DDP), with the CPU's
    # precision and one process per machine: ZeRO-2 trains, checkpoints in DeepSpeed's layout and saves a whole model.
    shipped = (ROOT / "config/accelerate/deepspeed_zero2.yaml").read_text()
    config = tmp_path / "zero2.yaml"
    config.write_text(shipped.replace("mixed_precision: bf16", 'mixed_precision: "no"'))
    machines = [node(rank, 29544, tmp_path / "out", "--max-steps", "3", "--eval-steps", "3", "--save-steps", "3",
                     "--share-prompts", config=["--config_file", str(config)]) for rank in (0, 1)]
    (main_status, main_out, main_err), (other_status, _, other_err) = finish(*machines)
    assert (main_status, other_status) == (0, 0), main_err[-3000:] + other_err[-3000:]
    assert "done: 3 steps" in main_out
    out = tmp_path / "out"
    assert (out / "checkpoint-3" / "global_step3").is_dir()  # DeepSpeed's own checkpoint: it was on
    assert {path.name for path in (out / "checkpoint-3").glob("rng_state_*.pth")} == {"rng_state_0.pth",
                                                                                     "rng_state_1.pth"}
    assert json.loads((out / "run_record.json").read_text())["launch"] == {"processes": 2, "engine": "zero2",
                                                                           "machines": 2}
    # Prompts shared under ZeRO-2 (asked for: the tiny model is under the default's size), the start-up check, which
    # compares shared with plain log-probabilities under the engine, having agreed.
    assert "shared prompts: on in generation" in (out / "grpo_training.log").read_text(encoding="utf-8")
    from safetensors.torch import load_file

    from grpo_tool.tiny_model import ensure_tiny_model

    trained, start = load_file(out / "final_model" / "model.safetensors"), load_file(ensure_tiny_model() /
                                                                                     "model.safetensors")
    assert 0 < max((trained[name].float() - start[name].float()).abs().max().item() for name in start) < 0.02


@pytest.mark.parametrize("present, fragment", [
    (0, "1 of 2 machines joined the rendezvous at 127.0.0.1:29543 within"),
    (1, "the main machine (machine_rank 0) at 127.0.0.1:29543 did not answer within"),
])
def test_a_machine_that_never_joins_ends_the_other_in_one_line(tmp_path, present, fragment):
    lonely = node(present, 29543, tmp_path / "out", launcher=OURS, wait=5)
    ((status, _, stderr),) = finish(lonely, timeout=120)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and fragment in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr and "frame #" not in stderr
    assert not (tmp_path / "out").exists()


def test_a_mistyped_launcher_argument_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", OURS, "--num_machinez", "2", str(ROOT / "train_grpo.py")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: unrecognized arguments: --num_machinez (see accelerate launch --help)"], result.stderr


def test_a_deepspeed_config_without_deepspeed_is_one_line(tmp_path):
    # deepspeed made unimportable in the launcher's process, as on a machine that never installed it.
    script = (f"import sys; sys.modules['deepspeed'] = None; sys.path.insert(0, {str(ROOT)!r})\n"
              f"from {OURS} import main\nsys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", script, "--config_file", "config/accelerate/deepspeed_zero2.yaml",
                             str(ROOT / "train_grpo.py"), "--quick-test", "--output-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: the accelerate config config/accelerate/deepspeed_zero2.yaml runs DeepSpeed, which is not installed "
        "here: pip install deepspeed (or launch with config/accelerate/ddp.yaml, which needs nothing more)"]
    assert not (tmp_path / "out").exists()
