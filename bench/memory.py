"""Memory over a long run: the peak resident memory of a 500-step tiny-model run against a 50-step one.

Both are the quick test's settings with evaluations (and generation logs) every 50 steps and checkpoints every 100,
each run in its own process. The long run also records its resident memory every 50 steps, so growth shows as a
curve, not only as a peak.

    python bench/memory.py [--short 50] [--long 500]

Prints the peaks and their ratio and writes bench/results/memory.json. Target: the long run's peak within 10% of the
short run's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from child_run import print_result, run_child  # noqa: E402 - once the repository is on sys.path

RESULTS = ROOT / "bench" / "results" / "memory.json"


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(steps: int) -> None:
    from transformers import TrainerCallback

    from config import build_config
    from grpo_trainer import GRPOTrainer

    samples = []

    class Sampler(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % 50 == 0:
                samples.append((state.global_step, round(resident_mb(), 1)))

    with tempfile.TemporaryDirectory() as output_dir:
        config = build_config(mode="quick_test", overrides={
            "max_steps": steps, "eval_steps": 50, "save_steps": 100, "logging_steps": 10, "output_dir": output_dir})
        GRPOTrainer(config, callbacks=[Sampler()]).train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_result({"steps": steps, "peak_mb": round(peak, 1), "resident_mb_by_step": samples})


def measure(steps: int) -> dict:
    return run_child(__file__, ["--child", str(steps)], f"{steps}-step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=50)
    parser.add_argument("--long", type=int, default=500)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    short, long = measure(args.short), measure(args.long)
    ratio = long["peak_mb"] / short["peak_mb"]
    report = {"benchmark": "memory", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "short": short, "long": long, "peak_ratio_long_over_short": round(ratio, 3),
              "target_ratio": 1.10, "meets_target": ratio <= 1.10}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.short} steps: peak {short['peak_mb']} MB")
    print(f"{args.long} steps: peak {long['peak_mb']} MB; resident by step: {long['resident_mb_by_step']}")
    print(f"ratio {ratio:.3f} (target <= 1.10) -> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
