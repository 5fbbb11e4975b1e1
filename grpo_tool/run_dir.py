"""One run per output dir: a used dir is refused unless the run continues it or replaces it, and a lock keeps two live
runs out of one dir (a dead run's lock is taken over).

    with DirectoryLock("grpo_outputs") as lock:      # what the command line does around every task that writes
        assert lock.holder()["pid"] == os.getpid()    # another run's DirectoryLock("grpo_outputs") is refused now
    assert not Path("grpo_outputs/.lock").exists()
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from grpo_tool import checkpoints, outputs
from grpo_tool.errors import UserError

LOCK_FILE = ".lock"
# What a training run leaves in its output dir (checkpoint-N besides); anything else there is the user's and stays.
RUN_ENTRIES = (outputs.RUN_RECORD_FILE, outputs.CONFIG_FILE, outputs.REWARD_CONFIG_FILE, outputs.LOG_FILE,
               outputs.FINAL_MODEL_DIR, outputs.GENERATION_LOG_DIR, outputs.REPORT_FILE, outputs.ALARMS_FILE)
# Removed with an earlier run too, but not a sign of one: half-written checkpoints, other tasks' files, trackers.
ALSO_REPLACED = (outputs.STAGING_DIR, outputs.EVALUATION_DIR, outputs.REWARD_CHECK_FILE, "runs", "wandb")


def previous_run(output_dir: str | Path, generation_log_dir: str | None = None) -> list[str]:
    """The entries of an earlier training run in `output_dir` (its checkpoints, record, logs, final model), and its
    generation logs when they were sent elsewhere."""
    directory = Path(output_dir)
    found = []
    if directory.is_dir():
        found = sorted(p.name for p in directory.glob(outputs.CHECKPOINT_PREFIX + "*")
                       if checkpoints.checkpoint_step(p) is not None)
        found += [name for name in RUN_ENTRIES if (directory / name).exists()]
    if generation_log_dir and outputs.logged_steps(generation_log_dir):
        outside = Path(generation_log_dir).resolve() != (directory / outputs.GENERATION_LOG_DIR).resolve()
        found += [str(generation_log_dir)] if outside else []
    return found


def check_output_dir(config) -> list[str]:
    """The earlier run's entries that this training run will replace (empty when there are none or it resumes);
    refuses a used dir that the run neither continues nor replaces."""
    output_dir, resume, overwrite = config.output_dir, config.resume_from_checkpoint, config.overwrite_output_dir
    found = previous_run(output_dir, config.generation_log_dir)
    if overwrite and resume:
        raise UserError("--overwrite-output-dir replaces the earlier run and --resume-from-checkpoint continues it: "
                        "give one of them")
    if found and resume not in (None, "latest") and \
            Path(resume).resolve().parent != Path(output_dir).resolve():
        raise UserError(f"output dir {output_dir} holds a run ({', '.join(found[:4])}), and checkpoint {resume} is "
                        "another run's: resuming it there would mix the two runs; give an --output-dir of its own, or "
                        "--resume-from-checkpoint one of this dir's checkpoints")
    if not found or resume:
        return []
    if not overwrite:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        if checkpoints.complete_checkpoints(output_dir):
            raise UserError(f"output dir {output_dir} already holds a run ({shown}): add --resume-from-checkpoint "
                            "latest to continue it, --overwrite-output-dir to replace it, or choose another "
                            "--output-dir")
        raise UserError(f"output dir {output_dir} already holds a run that stopped before its first checkpoint "
                        f"({shown}), so there is nothing to continue: add --overwrite-output-dir to replace it, or "
                        "choose another --output-dir")
    return found


def remove_previous_run(output_dir: str, found: list[str]) -> None:
    """Delete what an earlier run left (only the tool's own entries), for --overwrite-output-dir."""
    for name in [*found, *ALSO_REPLACED]:
        path = Path(output_dir) / name  # an absolute name (generation logs elsewhere) stays itself
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def missing_folders(folder: str | Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first: what creating it will make."""
    path, missing = Path(os.path.abspath(folder)), []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_if_empty(folders: list[Path]) -> None:
    """Remove each of `folders` (deepest first) that is an empty directory, stopping at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


class DirectoryLock:
    """{output_dir}/.lock while a task writes there. A lock left by a process that no longer runs (on this machine)
    is taken over. On release, the folders the task created (the output dir, `also` such as the generation log dir,
    and their parents) are removed again when nothing was written in them."""

    def __init__(self, output_dir: str | Path, also: tuple = ()):
        self.directory = Path(output_dir)
        self.path = self.directory / LOCK_FILE
        self.created = [missing_folders(folder) for folder in (output_dir, *[f for f in also if f])]
        self.held = False

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError as taken:
                holder = self.holder()
                same_host = holder.get("host") == socket.gethostname()
                if holder and (not same_host or process_alive(int(holder.get("pid", 0)))):
                    where = "on this machine" if same_host else f"on {holder.get('host')}"
                    self.release()
                    raise UserError(f"output dir {self.directory} is in use by another run (process "
                                    f"{holder.get('pid')} {where}, since {holder.get('started')}): wait for it to "
                                    f"end or choose another --output-dir (if that run is gone, delete {self.path})"
                                    ) from taken
                self.path.unlink(missing_ok=True)  # a dead run's lock, or one cut off while being written
                continue
            self.held = True  # from here on release() removes it, also when writing the holder fails (full disk)
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S")}, handle)
            except BaseException:
                self.release()
                raise
            return
        raise UserError(f"output dir {self.directory}: could not take its lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
        for created in self.created:
            remove_if_empty(created)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()
