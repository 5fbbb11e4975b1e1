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


# Copies of the four hub datasets, laid out as their repositories are (data/{split}-00000-of-00001.parquet) and
# filled from the fixture files of the same schemas: the hub code path, run offline.
MIRROR_LAYOUT = {
    "HuggingFaceH4/ultrafeedback_binarized": ("ultrafeedback_binarized.jsonl", {"train_prefs": 4, "test_prefs": 2}),
    "openbmb/UltraFeedback": ("openbmb_ultrafeedback.jsonl", {"train": 5}),
    "Anthropic/hh-rlhf": ("hh_rlhf.jsonl", {"train": 3, "test": 2}),
    "trl-lib/tldr-preference": ("tldr_preference.jsonl", {"train": 3, "validation": 2}),
}


@pytest.fixture(scope="session")
def hub_mirror(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("mirror")
    for repo_id, (fixture, splits) in MIRROR_LAYOUT.items():
        rows = datasets.load_dataset("json", data_files=str(FIXTURES / fixture), split="train")
        start = 0
        for split, count in splits.items():
            target = root / repo_id / "data" / f"{split}-00000-of-00001.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            rows.select(range(start, start + count)).to_parquet(str(target))
            start += count
    return root
