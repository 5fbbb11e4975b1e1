"""The evaluation people report, on the real SmolLM2-135M-Instruct: K = 8 samples per held-out problem of the
verifiable bench (bench/verifiable.py's multiplication word problems, on facts never trained on), scored as pass@1,
pass@8 and maj@8.

1. Speed: one evaluation of the starting model, prompts shared against not (each group's prompt computed once, or
   once per sample), each side in a process of its own, alternated, `--rounds` times; the seconds are TRL's
   evaluation loop only (sampling, scoring, the base-model measure): the model, the trainer and the base view are
   built before the clock starts, and generation logs are off.
2. Comparison: a run trained through the command line (the verifiable preset, LoRA r 16, 40 steps, a checkpoint
   every 20), then `--eval-only --eval-checkpoints all`, the table a user would read.

    python bench/evals.py [--rounds 2] [--held-out 16] [--steps 40] [--skip-training]

Prints the figures and writes bench/results/evals.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from verifiable import problems  # noqa: E402 - the same, from bench/

from child_run import child_flags, print_result, run_child  # noqa: E402 - once the repository is on sys.path

RESULTS = ROOT / "bench" / "results" / "evals.json"
SAMPLES = 8
# The training settings of bench/verifiable.py, through the command line.
TRAINING = ["--reward-config", "verifiable", "--batch-size", "8", "--gradient-accumulation-steps", "1",
            "--group-size", "4", "--max-completion-length", "48", "--max-seq-length", "512", "--learning-rate", "5e-4",
            "--lora-r", "16", "--lora-alpha", "16", "--seed", "7", "--temperature", "1.0"]


def write_task(directory: Path, train: int, held_out: int) -> tuple[Path, Path]:
    """The training and held-out problems as JSON Lines files ({"prompt", "answer"})."""
    train_rows, held_rows = problems(7, train, held_out)
    paths = directory / "train.jsonl", directory / "held_out.jsonl"
    for path, rows in zip(paths, (train_rows, held_rows)):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return paths


def child(model_dir: str, settings: dict) -> None:
    """One evaluation of the starting model, timed without the load."""
    from config import build_config
    from grpo_trainer import GRPOTrainer

    config = build_config(overrides={
        "model_name": model_dir, "custom_data": settings["train"], "eval_data": settings["held_out"],
        "reward_config_name": "verifiable", "max_eval_samples": settings["prompts"], "eval_samples": SAMPLES,
        "per_device_eval_batch_size": 16, "max_completion_length": 48, "max_seq_length": 512, "seed": 7,
        "share_prompts": settings["shared"], "output_dir": settings["output_dir"],
        "enable_generation_logging": False})
    trainer = GRPOTrainer(config)
    data = trainer.prepare_data(trainer.load_data())
    trainer.build_trainer(data, evaluate=True, log_dir=settings["output_dir"])  # TRL's trainer, the base view
    start = time.perf_counter()
    measured = trainer.trainer.evaluate()
    seconds = time.perf_counter() - start
    print_result({"seconds": seconds, "sharing": trainer.trainer.sharing.line,
                  **{key: value for key, value in measured.items() if isinstance(value, (int, float))}})


def speed(model_dir: str, train: Path, held_out: Path, prompts: int, rounds: int) -> dict:
    """Seconds per evaluation with prompts shared and without, alternated."""
    seconds: dict[str, list[float]] = {"shared": [], "unshared": []}
    last: dict[str, dict] = {}
    for round_number in range(rounds):
        for side in ("shared", "unshared"):
            with tempfile.TemporaryDirectory() as output_dir:
                settings = {"train": str(train), "held_out": str(held_out), "prompts": prompts,
                            "shared": side == "shared", "output_dir": output_dir}
                last[side] = run_child(__file__, ["--child", "--model-dir", model_dir, "--settings",
                                                  json.dumps(settings)], side)
            seconds[side].append(last[side]["seconds"])
            print(f"round {round_number + 1} {side:8s} {last[side]['seconds']:.1f} s per evaluation, "
                  f"pass@1 {last[side]['eval_pass@1']:.3f}", flush=True)
    median = {side: statistics.median(values) for side, values in seconds.items()}
    return {"seconds": {side: [round(value, 2) for value in values] for side, values in seconds.items()},
            "median_seconds": {side: round(value, 2) for side, value in median.items()},
            "speedup_shared": round(median["unshared"] / median["shared"], 3),
            "metrics": {side: {key: round(value, 4) for key, value in measured.items()
                               if key.startswith(("eval_pass", "eval_maj", "eval_reward"))}
                        for side, measured in last.items()},
            "sharing": last["shared"]["sharing"]}


def tool(*arguments: str) -> str:
    """The tool's command line; its output (the run stops the bench when it fails)."""
    process = subprocess.run([sys.executable, str(ROOT / "train_grpo.py"), *arguments], capture_output=True,
                             text=True, cwd=ROOT)
    if process.returncode:
        sys.exit(f"train_grpo.py {' '.join(arguments)} failed:\n{process.stderr[-3000:]}")
    return process.stdout


def comparison(model_dir: str, train: Path, held_out: Path, prompts: int, steps: int, output_dir: Path) -> dict:
    """Train, then compare the starting model and the checkpoints on the held-out problems."""
    start = time.perf_counter()
    tool("--model", model_dir, "--custom-data", str(train), "--eval-data", str(held_out), *TRAINING,
         "--max-steps", str(steps), "--save-steps", str(steps // 2), "--eval-steps", str(steps // 2),
         "--logging-steps", "5", "--max-eval-samples", "8", "--eval-samples", "4", "--output-dir", str(output_dir))
    trained = time.perf_counter() - start
    start = time.perf_counter()
    printed = tool("--eval-only", "--model", model_dir, "--custom-data", str(train), "--eval-data", str(held_out),
                   *TRAINING, "--max-eval-samples", str(prompts), "--eval-samples", str(SAMPLES),
                   "--per-device-eval-batch-size", "16", "--eval-checkpoints", "all", "--output-dir", str(output_dir))
    compared = time.perf_counter() - start
    table = json.loads((output_dir / "evaluation" / "comparison.json").read_text())
    keep = ("eval_reward", "eval_pass@1", f"eval_pass@{SAMPLES}", f"eval_maj@{SAMPLES}",
            "eval_completions/mean_length")
    return {"train_seconds": round(trained, 1), "compare_seconds": round(compared, 1),
            "printed": printed.strip().splitlines()[-(len(table["models"]) + 2):],
            "models": [{"model": row["model"], "step": row["step"],
                        **{key.removeprefix("eval_"): round(row[key], 4) for key in keep if key in row}}
                       for row in table["models"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--held-out", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip-training", action="store_true", help="the speed part only")
    child_flags(parser)
    args = parser.parse_args()
    if args.child:
        child(args.model_dir, json.loads(args.settings))
        return
    from grpo_tool.example_models import smollm2_gguf
    from grpo_tool.gguf_models import converted_gguf

    model_dir = str(converted_gguf(smollm2_gguf()))
    report = {"benchmark": "evals", "model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to fp32)",
              "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "task": "bench/verifiable.py's multiplication word problems; held-out problems on facts never trained "
                      "on", "samples_per_prompt": SAMPLES, "held_out_prompts": args.held_out,
              "settings": {"eval_batch": 16, "completion_tokens": 48, "eval_temperature": "the training "
                           "temperature, 1.0", "seed": 7}}
    with tempfile.TemporaryDirectory() as work:
        train, held_out = write_task(Path(work), args.steps * 2, args.held_out)
        report["speed"] = speed(model_dir, train, held_out, args.held_out, args.rounds)
        print(f"median {report['speed']['median_seconds']}: shared prompts {report['speed']['speedup_shared']}x",
              flush=True)
        if not args.skip_training:
            report["comparison"] = comparison(model_dir, train, held_out, args.held_out, args.steps,
                                              Path(work) / "run")
            report["comparison"]["training"] = " ".join(TRAINING) + f" --max-steps {args.steps}"
            print("\n".join(report["comparison"]["printed"]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
