"""Shared test set-up: the repository on sys.path, a private tiny-model cache, and a helper to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def tiny_model_cache(tmp_path_factory):
    """Build the tiny model once per test session, in a fresh place, so the tests also prove it builds offline."""
    os.environ["GRPO_TINY_MODEL_DIR"] = str(tmp_path_factory.mktemp("tiny-model") / "tiny")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = "offline"
    yield Path(os.environ["GRPO_TINY_MODEL_DIR"])


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python train_grpo.py ARGS` in a child process, as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "train_grpo.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=os.environ.copy())
