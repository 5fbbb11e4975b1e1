"""Overhead of this tool against a plain TRL script doing the same GRPO work on the tiny model.

Both sides train the same tiny model on the same sample prompts with the same reward, batch, group size, completion
length, learning rate and number of steps, with evaluation and checkpointing off. Every completion is exactly 32
tokens (generation_kwargs min_new_tokens) and ours keeps flat groups (zero_variance_groups keep, where resampling would
generate more), so that both sides do the same work whatever they learn. The TRL side leaves everything else at TRL's
defaults (bf16 and gradient checkpointing on); ours uses its own defaults, which pick what is fastest for the model
and machine at hand. Each side runs in its own process, alternately, and the median of the rounds is kept.

    python bench/overhead.py [--steps 40] [--rounds 3]

A third side, TRL at the precision and checkpointing our defaults chose, shows what our own glue costs.
Prints steps per second for each side and the ratios, and writes bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from child_run import print_result, run_child  # noqa: E402 - once the repository is on sys.path

RESULTS = ROOT / "bench" / "results" / "overhead.json"
SIDES = ("ours", "trl", "trl-matched")
WORK = {"batch": 8, "group": 4, "completion_tokens": 32, "learning_rate": 3e-3, "prompts": 200}
FIXED_LENGTH = {"min_new_tokens": WORK["completion_tokens"]}  # TRL's generation_kwargs


def run_ours(steps: int, output_dir: str) -> dict:
    import datasets

    from data_loader import load_grpo_dataset
    from grpo_tool.settings import GRPOConfig
    from grpo_trainer import GRPOTrainer

    config = GRPOConfig(model_name="tiny", dataset_name="sample", use_lora=False, max_steps=steps,
                        per_device_train_batch_size=WORK["batch"], gradient_accumulation_steps=1,
                        group_size=WORK["group"], max_completion_length=WORK["completion_tokens"],
                        max_seq_length=256, learning_rate=WORK["learning_rate"], max_samples=WORK["prompts"],
                        logging_steps=steps, eval_steps=10 * steps, save_steps=10 * steps,
                        enable_generation_logging=False, output_dir=output_dir, zero_variance_groups="keep",
                        trl_options={"generation_kwargs": FIXED_LENGTH},
                        prompt_format="text")  # the plain script hands TRL the sample prompts as text
    trainer = GRPOTrainer(config)
    data = load_grpo_dataset(config)
    trainer.load_model()
    data = {"train": data["train"], "eval": data["eval"].select([])}  # no evaluation, as on the TRL side
    result = trainer.train(datasets.DatasetDict(data))
    logs = [e for e in trainer.trainer.state.log_history if "reward" in e]
    return {"train_runtime": result.metrics["train_runtime"], "last_reward": logs[-1]["reward"] if logs else None,
            "completion_length": logs[-1]["completions/mean_length"] if logs else None,
            "bf16": trainer.trainer.args.bf16, "gradient_checkpointing": trainer.trainer.args.gradient_checkpointing}


def run_plain_trl(steps: int, output_dir: str, matched: bool = False) -> dict:
    """TRL at its defaults; with `matched`, at the precision and checkpointing our defaults chose, which isolates the
    cost of our own glue (data checks, callbacks, logging)."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from grpo_tool.datasets import SAMPLE_FILES
    from grpo_tool.reward_config import DEFAULT_REWARD_CONFIG
    from grpo_tool.scoring import make_total_reward
    from grpo_tool.tiny_model import ensure_tiny_model
    from rewards import rule_components

    path = ensure_tiny_model()
    train = datasets.load_dataset("json", data_files=str(SAMPLE_FILES["train"]), split="train")
    train = train.select(range(min(WORK["prompts"], len(train))))
    args = GRPOConfig(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=WORK["batch"],
                      num_generations=WORK["group"], max_completion_length=WORK["completion_tokens"],
                      learning_rate=WORK["learning_rate"], logging_steps=steps, save_strategy="no",
                      report_to="none", generation_kwargs=FIXED_LENGTH,
                      # TRL's default bf16=True refuses to start on a machine without a GPU unless told use_cpu.
                      use_cpu=not torch.cuda.is_available(),
                      **({"bf16": False, "gradient_checkpointing": False} if matched else {}))
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=train,
                          reward_funcs=make_total_reward(rule_components(DEFAULT_REWARD_CONFIG)),
                          processing_class=AutoTokenizer.from_pretrained(path))
    result = trainer.train()
    logs = [e for e in trainer.state.log_history if "reward" in e]
    return {"train_runtime": result.metrics["train_runtime"], "last_reward": logs[-1]["reward"] if logs else None,
            "completion_length": logs[-1]["completions/mean_length"] if logs else None,
            "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing}


def child(which: str, steps: int) -> None:
    with tempfile.TemporaryDirectory() as output_dir:
        if which == "ours":
            measured = run_ours(steps, output_dir)
        else:
            measured = run_plain_trl(steps, output_dir, matched=which == "trl-matched")
    print_result(measured)


def measure(which: str, steps: int) -> dict:
    return run_child(__file__, ["--child", which, "--steps", str(steps)], which)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    runs = {which: [] for which in SIDES}
    for round_number in range(args.rounds):
        for which in SIDES:
            runs[which].append(measure(which, args.steps))
            print(f"round {round_number + 1}: {which:11s} {args.steps / runs[which][-1]['train_runtime']:.2f} steps/s",
                  flush=True)
    summary = {}
    for which, results in runs.items():
        runtime = statistics.median(r["train_runtime"] for r in results)
        summary[which] = {"steps_per_second": round(args.steps / runtime, 3), "median_train_seconds": round(runtime, 3),
                          "bf16": results[0]["bf16"], "gradient_checkpointing": results[0]["gradient_checkpointing"],
                          "last_logged_reward": [r["last_reward"] for r in results],
                          "completion_length": [r["completion_length"] for r in results]}
    ratio = summary["ours"]["steps_per_second"] / summary["trl"]["steps_per_second"]
    matched_ratio = summary["ours"]["steps_per_second"] / summary["trl-matched"]["steps_per_second"]
    report = {"benchmark": "overhead", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "steps": args.steps, "rounds": args.rounds, "work": WORK,
              **summary, "speed_ratio_ours_over_trl": round(ratio, 3),
              "speed_ratio_ours_over_trl_matched": round(matched_ratio, 3)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"ours: {summary['ours']['steps_per_second']} steps/s (bf16={summary['ours']['bf16']}, "
          f"gradient checkpointing={summary['ours']['gradient_checkpointing']})")
    print(f"TRL defaults: {summary['trl']['steps_per_second']} steps/s (bf16={summary['trl']['bf16']}, "
          f"gradient checkpointing={summary['trl']['gradient_checkpointing']})")
    print(f"TRL at our settings: {summary['trl-matched']['steps_per_second']} steps/s")
    print(f"ratio ours / TRL defaults: {ratio:.2f}x; ours / TRL at our settings: {matched_ratio:.2f}x  ->  "
          f"{RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
