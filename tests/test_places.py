"""Places that cannot be written: a read-only mount, a disk that fills at a checkpoint or at the final save. Each ends
in one `error:` line naming the folder, with nothing half-written left and advice that works when followed.

The real conditions need a mount (root with the right to mount a tmpfs, as on these machines and CI); where that is
not allowed the same paths are driven by an injected failure."""

import contextlib
import errno
import json
import subprocess
import uuid

import pytest

from conftest import run_main
from grpo_tool.places import out_of_space, unwritable, write_failure


@contextlib.contextmanager
def mounted(folder, options):
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def read_only(tmp_path):
    with mounted(tmp_path / "ro", "ro,size=1m") as folder:
        yield folder


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], lines
    return lines[-1]


@pytest.mark.parametrize("flags", [["--output-dir", "{ro}/run"], ["--output-dir", "{ro}"],
                                   ["--generation-log-dir", "{ro}/logs"], ["--plan", "--output-dir", "{ro}/run"],
                                   ["--check-rewards", "--output-dir", "{ro}/run"]])
def test_a_read_only_place_is_one_line_before_any_model_loads(read_only, tmp_path, flags):
    flags = [flag.format(ro=read_only) for flag in flags]
    if "--output-dir" not in flags:
        flags += ["--output-dir", str(tmp_path / "out" / "deep")]
    line = one_error_line(run_main("--quick-test", *flags))
    assert f"cannot write in {read_only} (a read-only file system)" in line
    assert not (tmp_path / "out").exists()  # the folders a failed run made are gone, parents too


def test_a_read_only_cache_is_named_when_the_tiny_model_must_be_built(read_only, monkeypatch, tmp_path):
    monkeypatch.setenv("GRPO_TINY_MODEL_DIR", str(read_only / "tiny"))
    line = one_error_line(run_main("--quick-test", "--output-dir", str(tmp_path / "out")))
    assert line.startswith("error: the tool's cache") and "set XDG_CACHE_HOME" in line


def test_report_into_a_read_only_run_is_one_line(tmp_path):
    with mounted(tmp_path / "run", "size=1m") as run:
        (run / "run_record.json").write_text(json.dumps({"model": "tiny", "components": {}}))
        subprocess.run(["mount", "-o", "remount,ro", str(run)], check=True)
        line = one_error_line(run_main("--report", "--output-dir", str(run)))
        assert f"cannot write in {run} (a read-only file system)" in line


def test_write_failures_in_words():
    assert write_failure(OSError(errno.EROFS, "Read-only file system", "/mnt/x/report.html")) == \
        "cannot write /mnt/x/report.html: a read-only file system; give a folder you can write to"
    assert write_failure(OSError(errno.ENOSPC, "No space left on device", "/data/run/log.txt")).startswith(
        "no space left on /data/run (writing /data/run/log.txt)")
    assert write_failure(OSError(errno.ENOENT, "No such file")) is None  # not the machine's refusal: a bug, traced
    assert write_failure(ValueError("x")) is None


def test_a_full_disk_is_told_by_the_error_or_by_the_free_space(tmp_path):
    assert out_of_space(RuntimeError("Error while serializing: No space left on device (os error 28)"))
    assert not out_of_space(RuntimeError("unexpected pos 576 vs 534"))  # torch.save's words: the space decides
    assert not out_of_space(RuntimeError("unexpected pos 576 vs 534"), tmp_path)
    with mounted(tmp_path / "full", "size=64k") as full:
        (full / "filler").write_bytes(b"\0" * 60_000)
        assert out_of_space(RuntimeError("unexpected pos 576 vs 534"), full)
    assert unwritable("output_dir", tmp_path / "new" / "deeper") is None


SHORT = ["--quick-test", "--max-steps", "6", "--eval-steps", "3", "--save-steps", "3"]


def test_a_disk_that_fills_at_a_checkpoint_names_the_last_complete_one(tmp_path):
    # The tiny model's checkpoint takes about 1.4 MB: the first fits in 2 MB, the second does not.
    with mounted(tmp_path / "disk", "size=2m") as disk:
        run = disk / "run"
        line = one_error_line(run_main(*SHORT, "--output-dir", str(run)))
        assert line == (f"error: no space left on {run} while writing checkpoint-6 (the half-written copy is "
                        f"removed); the last complete checkpoint is {run}/checkpoint-3: free space, then resume with "
                        f"--resume-from-checkpoint {run}/checkpoint-3")
        assert not (run / ".staging").exists() and not (run / "checkpoint-6").exists()


def test_a_disk_that_fills_at_the_final_save_is_finished_by_the_resume_it_advises(tmp_path):
    with mounted(tmp_path / "disk", "size=1600k") as disk:
        run = disk / "run"
        line = one_error_line(run_main(*SHORT, "--save-steps", "6", "--output-dir", str(run)))
        assert line.startswith(f"error: no space left on {run} while writing the final model")
        assert not list(run.glob(".final_model*")) and not (run / "final_model").exists()
        advice = line.rsplit(" ", 2)[-2:]
        assert advice[0] == "--resume-from-checkpoint" and advice[1] == f"{run}/checkpoint-6"
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)  # space freed
        resumed = run_main(*SHORT, "--save-steps", "6", "--output-dir", str(run), *advice)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        # No step trained (transformers alone would train a seventh), and the model is the checkpoint's.
        assert "done: 6 steps" in resumed.stdout and not (run / "checkpoint-7").exists()
        assert json.loads((run / "final_model" / "trainer_state.json").read_text())["global_step"] == 6


def test_a_full_disk_at_a_checkpoint_is_caught_without_a_mount(tmp_path, monkeypatch):
    """The same path, for machines that cannot mount: the save fails as safetensors says a full disk."""
    import transformers

    saves = []

    def fail_second(self, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        return original(self, *args, **kwargs)

    original = transformers.Trainer.save_model
    monkeypatch.setattr(transformers.Trainer, "save_model", fail_second)
    run = tmp_path / f"run-{uuid.uuid4().hex[:6]}"
    line = one_error_line(run_main(*SHORT, "--output-dir", str(run)))
    assert "while writing checkpoint-6" in line and f"--resume-from-checkpoint {run}/checkpoint-3" in line
    assert not (run / ".staging").exists()


def test_an_output_dir_through_a_dangling_link_is_one_line(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    line = one_error_line(run_main("--quick-test", "--output-dir", str(tmp_path / "link" / "run")))
    assert f"{tmp_path / 'link'} is a link to {tmp_path / 'gone'}, which does not exist" in line
    assert not (tmp_path / "gone").exists()
