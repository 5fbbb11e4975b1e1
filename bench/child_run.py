"""Running one measurement in a fresh process, so runs do not share caches, threads or memory peaks.

The child prints `RESULT {json}` as its last such line; the parent reads it back.

    measured = run_child(__file__, ["--child", "ours"], "ours")    # in the parent
    print_result({"seconds": 1.2})                                   # in the child
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "RESULT "


def print_result(measured: dict) -> None:
    print(MARK + json.dumps(measured), flush=True)


def run_child(script: str, arguments: list[str], label: str) -> dict:
    process = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in process.stdout.splitlines() if line.startswith(MARK)]
    if process.returncode or not lines:
        sys.exit(f"{label} run failed:\n{process.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def child_flags(parser, sides=None) -> None:
    """The hidden flags a script passes to its own child process: --child (a flag, or which of `sides` it runs),
    --model-dir and --settings (JSON)."""
    import argparse

    if sides is None:
        parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    else:
        parser.add_argument("--child", choices=list(sides), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)


def speed_ratio(faster: dict, slower: dict, key: str = "steps_per_second") -> float:
    """How many times faster one side's summary is than another's: by a rate (`key`), or by seconds a step when `key`
    names seconds."""
    ratio = slower[key] / faster[key] if "seconds" in key else faster[key] / slower[key]
    return round(ratio, 3)


def only_reward(function, output_dir: str) -> dict:
    """Config fields that make a run of this tool score with `function` alone, as a plain TRL script passes it: the
    function written out as a --reward-fn file, and a reward config that weighs the built-in rewards 0."""
    source = Path(output_dir) / f"{function.__name__}.py"
    source.write_text(inspect.getsource(function))
    weights = Path(output_dir) / "rewards.json"
    weights.write_text(json.dumps({"accuracy_weight": 0, "length_weight": 0, "quality_weight": 0}))
    return {"reward_functions": [f"{source}:{function.__name__}"], "reward_config_path": str(weights)}
