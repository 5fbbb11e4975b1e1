"""What to do with groups whose completions all scored the same, measured: keep, drop and resample, each at the same
wall-clock budget, on the real SmolLM2-135M-Instruct and the answer-checked task of bench/verifiable.py
(multiplication word problems; the held-out problems use facts the training problems never do). At the start the
model gets most problems wrong at temperature 1, so most groups are flat.

Each mode trains in a process of its own, one after the other, with the same seed, data and settings. The training
clock stops while held-out accuracy (greedy, scored by answer_match) is measured every --every seconds of training,
and the run stops once the clock passes --budget. Reported per mode: held-out accuracy against training seconds and
against completion tokens generated, the training reward, flat groups, groups dropped and resampled, and how soon
each mode reached keep's final held-out accuracy.

    python bench/zero_variance.py [--seed 7] [--budget 360] [--every 60] [--modes keep,drop,resample]

Prints the figures and writes bench/results/zero_variance.json, one run per seed: a run with another seed and the
same settings is added beside those already there (each seed takes about 25 minutes on 2 cores), and the figures
across seeds are worked out again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from child_run import print_result, run_child  # noqa: E402, I001 - once the repository is on sys.path
from verifiable import accuracy, fitted, problems, task_arguments, task_settings  # noqa: E402 - the same task and the same accuracy

RESULTS = ROOT / "bench" / "results" / "zero_variance.json"
MODES = ("keep", "drop", "resample")


def budget_callback(settings: dict, measure):
    """A callback that keeps the training clock (evaluations excluded), measures held-out accuracy every
    settings["every"] training seconds and stops the run past settings["budget"]."""
    from transformers import TrainerCallback

    class Budget(TrainerCallback):
        def __init__(self):
            self.points, self.tokens, self.paused, self.start = [], 0.0, 0.0, None
            self.next_point = settings["every"]

        def clock(self) -> float:
            return time.perf_counter() - self.start - self.paused

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            logs = logs or {}
            if logs.get("completions/mean_length") is None or "eval_reward" in logs:
                return
            completions = settings["batch"] + (logs.get("groups/extra_completions") or 0)
            self.tokens += logs["completions/mean_length"] * completions
            seconds = self.clock()
            if seconds < self.next_point and seconds < settings["budget"]:
                return
            paused = time.perf_counter()
            right = measure(model)
            model.train()
            self.paused += time.perf_counter() - paused
            self.points.append({"seconds": round(seconds, 1), "step": state.global_step,
                                "completion_tokens": round(self.tokens), "accuracy": right})
            self.next_point += settings["every"]
            if seconds >= settings["budget"]:
                control.should_training_stop = True

    return Budget()


def child(mode: str, model_dir: str, settings: dict) -> None:
    import datasets

    from grpo_tool.settings import GRPOConfig
    from grpo_trainer import GRPOTrainer

    train_rows, held_out_rows = problems(settings["seed"], settings["train_problems"], settings["held_out_problems"])
    train, held_out = fitted(model_dir, train_rows, settings), fitted(model_dir, held_out_rows, settings)
    budget = budget_callback(settings, lambda model: accuracy(model, trainer.tokenizer, held_out, settings)[0])
    config = GRPOConfig(
        model_name=model_dir, reward_config_name="verifiable", max_steps=10_000, zero_variance_groups=mode,
        per_device_train_batch_size=settings["batch"], gradient_accumulation_steps=1, group_size=settings["group"],
        lora_r=16, lora_alpha=16, max_completion_length=settings["completion_tokens"], max_seq_length=512,
        learning_rate=settings["learning_rate"], temperature=settings["temperature"], logging_steps=1,
        save_steps=10_000, eval_steps=10_000, enable_generation_logging=False, seed=settings["seed"],
        output_dir=str(Path(settings["output_dir"]) / mode))
    trainer = GRPOTrainer(config, callbacks=[budget])
    data = trainer.load_data(datasets.DatasetDict({"train": train, "eval": held_out.select(range(4))}))
    trainer.load_model()
    before = accuracy(trainer.model, trainer.tokenizer, held_out, settings)[0] if settings["measure_start"] else None
    trainer.train(data)
    history = [entry for entry in trainer.trainer.state.log_history if "reward" in entry]

    def curve(name: str, otherwise: str = "") -> list:
        return [round(entry.get(name, entry.get(otherwise)) or 0.0, 4) for entry in history]

    print_result({"accuracy_before": before, "points": budget.points, "steps": trainer.trainer.state.global_step,
                  "reward_curve": curve("reward"), "flat_curve": curve("frac_reward_zero_std"),
                  "step_flat_curve": curve("groups/flat", "frac_reward_zero_std"),
                  "dropped_curve": curve("groups/dropped"),
                  "resampled_curve": curve("groups/resampled"),
                  "extra_completions_curve": curve("groups/extra_completions"),
                  "step_seconds": curve("step_time")})


def reached(points: list[dict], target: float) -> dict | None:
    """The first measurement at or above `target`."""
    return next((point for point in points if point["accuracy"] >= target), None)


def summary(measured: dict) -> dict:
    """Each mode's final accuracy, and the share of keep's time (and tokens) it took to reach keep's final accuracy
    and keep's best one (single measurements of 60 problems move by several points, so the best is the stricter)."""
    keep = measured.get("keep")
    rows = {}
    for mode, result in measured.items():
        final = result["points"][-1]
        row = {"final_accuracy": final["accuracy"], "final_seconds": final["seconds"], "steps": result["steps"],
               "completion_tokens": final["completion_tokens"]}
        if keep:
            end = keep["points"][-1]
            for name, target in (("keep_final", end["accuracy"]),
                                 ("keep_best", max(point["accuracy"] for point in keep["points"]))):
                point = reached(result["points"], target)
                row[f"share_of_keep_time_to_{name}"] = round(point["seconds"] / end["seconds"], 3) if point else None
                row[f"share_of_keep_tokens_to_{name}"] = (round(point["completion_tokens"] / end["completion_tokens"],
                                                                3) if point else None)
        rows[mode] = row
    return rows


def across_seeds(runs: dict) -> dict:
    """Per mode, over the seeds run: held-out accuracy at each measurement (mean), and the shares of keep's time."""
    modes = {mode for run in runs.values() for mode in run["modes"]}
    table = {}
    for mode in sorted(modes):
        curves = [run["modes"][mode]["points"] for run in runs.values() if mode in run["modes"]]
        length = min(len(curve) for curve in curves)
        table[mode] = {"seeds": len(curves),
                       "mean_accuracy_by_measurement": [round(sum(c[i]["accuracy"] for c in curves) / len(curves), 4)
                                                        for i in range(length)],
                       "mean_seconds_by_measurement": [round(sum(c[i]["seconds"] for c in curves) / len(curves), 1)
                                                       for i in range(length)],
                       **{name: [run["summary"][mode].get(name) for run in runs.values() if mode in run["summary"]]
                          for name in ("share_of_keep_time_to_keep_final", "share_of_keep_time_to_keep_best")}}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=360.0, help="training seconds per mode")
    parser.add_argument("--every", type=float, default=60.0, help="training seconds between accuracy measurements")
    parser.add_argument("--train-problems", type=int, default=96)
    parser.add_argument("--modes", default=",".join(MODES))
    task_arguments(parser, held_out=60, children=MODES)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model_dir, json.loads(args.settings))
        return
    import tempfile

    from grpo_tool.example_models import smollm2_gguf
    from grpo_tool.gguf_models import converted_gguf

    settings = {"budget": args.budget, "every": args.every, "temperature": 1.0, "train_problems": args.train_problems,
                **task_settings(args)}
    model_dir = str(converted_gguf(smollm2_gguf()))
    measured = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for index, mode in enumerate(args.modes.split(",")):
            run = {**settings, "output_dir": output_dir, "measure_start": index == 0}
            measured[mode] = run_child(__file__, ["--child", mode, "--model-dir", model_dir,
                                                  "--settings", json.dumps(run)], mode)
            points = measured[mode]["points"]
            print(f"{mode:8s} " + "  ".join(f"{p['seconds']:.0f}s {p['accuracy']:.0%}" for p in points)
                  + f"  ({measured[mode]['steps']} steps)", flush=True)
    start = next(result["accuracy_before"] for result in measured.values())
    settings.pop("seed")
    report = {"benchmark": "zero_variance", "model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to fp32)",
              "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "task": "multiplication word problems (bench/verifiable.py), held-out problems on facts never trained on",
              "settings": {**settings, "lora_r": 16, "reward": "answer_match (the verifiable preset)",
                           "resample_rounds": 2, "loss_type": "dapo"}, "runs": {}}
    earlier = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if earlier.get("settings") == report["settings"]:
        report["runs"] = earlier.get("runs", {})  # other seeds, run before with the same settings, are kept
    run = {"date": time.strftime("%Y-%m-%d"), "held_out_accuracy_at_start": start, "summary": summary(measured),
           "modes": measured}
    report["runs"][str(args.seed)] = run
    report["across_seeds"] = across_seeds(report["runs"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for mode, row in run["summary"].items():
        print(f"{mode:8s} final {row['final_accuracy']:.0%} at {row['final_seconds']:.0f}s; keep's final reached at "
              f"{row.get('share_of_keep_time_to_keep_final')} of keep's time, keep's best at "
              f"{row.get('share_of_keep_time_to_keep_best')}")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
