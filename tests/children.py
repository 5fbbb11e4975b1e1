"""Runs of the command line in processes of their own, for what needs one (a signal, a kill, secrets in the
environment), started from a fork server that has imported torch, transformers, TRL and the tool once: a child starts
in milliseconds instead of the seconds a new interpreter spends on those imports, and runs `train_grpo.main` exactly
as `python train_grpo.py` would. What needs a new interpreter itself (the import order, a launcher, the one-line
error a user sees from the shell) uses conftest.run_cli instead.

The server imports with the session's environment (conftest sets it before any test runs); a child's own `env` is set
before main runs, which is when the tool and the libraries read it (W&B, secrets, HOME).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# transformers loads its models' modules lazily, at first use: those a tiny-model run uses are named.
PRELOAD = ["torch", "transformers", "transformers.models.llama.modeling_llama", "transformers.tokenization_utils_fast",
           "transformers.trainer", "trl", "trl.trainer.grpo_trainer", "peft", "datasets", "accelerate", "train_grpo",
           "grpo_trainer", "generation_logger", "grpo_tool.trl_setup", "grpo_tool.trainer_hooks", "grpo_tool.models",
           "grpo_tool.sampling", "grpo_tool.callbacks", "grpo_tool.base_view", "grpo_tool.report"]

_context = None


def fork_server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(args: list[str], cwd: str | None, env: dict[str, str], out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    for stream, path in ((sys.stdout, out), (sys.stderr, err)):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(descriptor, stream.fileno())
        os.close(descriptor)
    from train_grpo import main

    sys.exit(main(args))


class Child:
    """A child run, with the parts of subprocess.Popen's interface the tests use."""

    def __init__(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
        self.args = list(args)
        folder = Path(tempfile.mkdtemp(prefix="child-"))
        self.out, self.err = folder / "stdout", folder / "stderr"
        self.process = fork_server().Process(target=_child, args=(self.args, str(cwd) if cwd else None,
                                                                   dict(os.environ if env is None else env),
                                                                   str(self.out), str(self.err)))
        self.process.start()
        self.pid = self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode  # -N when a signal ended it, as subprocess says

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.returncode is None:
            self.kill()
            self.process.join()
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = 600) -> tuple[str, str]:
        """(stdout, stderr) once the child has ended; its scratch folder goes."""
        self.wait(timeout)
        output = tuple(path.read_text(errors="replace") if path.exists() else "" for path in (self.out, self.err))
        shutil.rmtree(self.out.parent, ignore_errors=True)
        return output


def run_child(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """`python train_grpo.py ARGS` in a child of the fork server, to its end."""
    child = Child(*args, cwd=cwd, env=env)
    stdout, stderr = child.communicate(timeout)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
