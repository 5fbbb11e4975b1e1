"""The alarms on the zoo (bench/alarm_zoo.py): every case run at two logging cadences, with what each raised, caught,
missed and raised falsely, and the step of its first right alarm; beside them, when a Python with rldoctor 0.2.0 is
given, rldoctor's findings on the same runs' logs (bench/rldoctor_view.py).

    python bench/alarms.py [--cadences 1,10] [--rldoctor-python /tmp/rldvenv/bin/python]

Each run is `python train_grpo.py` in a process of its own, one after the other. Prints a table and writes
bench/results/alarms.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alarm_zoo import CASES, STEPS, case_flags, judged, verdict, zoo_data, zoo_model  # noqa: E402 - bench/ is the script's folder

RESULTS = ROOT / "bench" / "results" / "alarms.json"


def rldoctor(python: str | None, output_dir: Path) -> list[dict] | None:
    if not python:
        return None
    state = output_dir / f"checkpoint-{STEPS}" / "trainer_state.json"
    done = subprocess.run([python, str(ROOT / "bench" / "rldoctor_view.py"), str(state)], capture_output=True,
                          text=True)
    if done.returncode:
        sys.exit(f"rldoctor failed on {state}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["findings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cadences", default="1,10", help="logging steps to run each case at")
    parser.add_argument("--rldoctor-python", help="a Python that has rldoctor 0.2.0 installed")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    cadences = [int(value) for value in args.cadences.split(",")]
    work = Path(tempfile.mkdtemp(prefix="alarm-zoo-"))
    model, data = zoo_model(work / "model"), zoo_data(work / "prompts.jsonl")
    runs = []
    for name in args.cases.split(","):
        for cadence in cadences:
            output_dir = work / f"{name}-{cadence}"
            started = time.time()
            done = subprocess.run([sys.executable, str(ROOT / "train_grpo.py"),
                                   *case_flags(name, model, data, output_dir, cadence)],
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                sys.exit(f"{name} at logging_steps={cadence} failed:\n{done.stderr[-3000:]}")
            raised = judged(output_dir)
            run = {"case": name, "what": CASES[name].what, "logging_steps": cadence,
                   "expected": sorted(CASES[name].expected), "raised": raised, **verdict(name, raised),
                   "seconds": round(time.time() - started, 1)}
            if (found := rldoctor(args.rldoctor_python, output_dir)) is not None:
                run["rldoctor"] = found
            runs.append(run)
            others = ", ".join(f"{f['detector']}@{f['step']}" for f in run.get("rldoctor", [])) or "-"
            print(f"{name:20} logging {cadence:2}  expected {','.join(run['expected']) or '-':22} raised "
                  f"{', '.join(f'{k}@{v}' for k, v in raised.items()) or '-':40} rldoctor {others}", flush=True)
    broken = [run for run in runs if run["expected"]]
    healthy = [run for run in runs if not run["expected"]]
    summary = {"broken_runs": len(broken), "caught": sum(run["caught"] for run in broken),
               "healthy_runs": len(healthy), "false_alarms": sum(len(run["false"]) for run in runs),
               "healthy_runs_with_an_alarm": sum(bool(run["raised"]) for run in healthy)}
    print(json.dumps(summary))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "steps": STEPS,
                                   "summary": summary, "runs": runs}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
