"""The same GRPO work on the real SmolLM2-135M-Instruct through this tool, through plain TRL at its defaults, and
through plain TRL at the settings our defaults choose, alternated, each run in a process of its own.

The work: the bundled sample prompts as chat messages, a LoRA adapter (r 16, alpha 16, every linear layer), 8
completions per step in groups of 4, learning rate 1e-3. TRL's defaults differ in bf16 and gradient checkpointing
(on); "TRL at our settings" turns both off, as our defaults do on a CPU. Ours also samples on merged LoRA weights
(merge_lora_for_generation). Two phases:
- speed: every completion exactly 32 tokens (generation_kwargs min_new_tokens), and ours keeps flat groups
  (zero_variance_groups keep), so each side does the same work whatever it samples; `--steps` steps, `--rounds`
  alternated rounds: steps and completion tokens per second, peak resident memory.
- learning: a brevity reward the model can learn, completions up to 32 tokens, `--learn-steps` steps, once per
  side: the reward curve.

    python bench/real_model.py [--steps 8] [--rounds 2] [--learn-steps 12]

Prints the figures and writes bench/results/real_model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from child_run import only_reward, print_result, run_child, speed_ratio  # noqa: E402 - once the repository is on sys.path

RESULTS = ROOT / "bench" / "results" / "real_model.json"
SIDES = ("ours", "trl", "trl-matched")
WORK = {"batch": 8, "group": 4, "completion_tokens": 32, "learning_rate": 1e-3, "prompts": 64, "lora_r": 16}
FIXED_LENGTH = {"min_new_tokens": WORK["completion_tokens"]}  # TRL's generation_kwargs in the speed phase


def brevity_reward(completions, **kwargs):
    """1 for an empty answer, 0 from 20 words on: a reward the model can learn within a few steps."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [max(0.0, 1.0 - len(text.split()) / 20) for text in texts]


def prompts(model_dir: str):
    """The sample prompts as the tool gives them to this model (chat messages, within the token budget)."""
    from transformers import AutoTokenizer

    from data_loader import load_grpo_dataset
    from grpo_tool.prompt_budget import fit_to_model
    from grpo_tool.settings import GRPOConfig

    config = GRPOConfig(model_name=model_dir, dataset_name="sample", max_samples=WORK["prompts"], max_seq_length=512,
                        max_completion_length=WORK["completion_tokens"])
    return fit_to_model(load_grpo_dataset(config), AutoTokenizer.from_pretrained(model_dir), config)["train"]


def run_ours(model_dir: str, steps: int, output_dir: str, fixed: bool):
    import datasets

    from grpo_tool.settings import GRPOConfig
    from grpo_trainer import GRPOTrainer

    config = GRPOConfig(model_name=model_dir, max_steps=steps, per_device_train_batch_size=WORK["batch"],
                        gradient_accumulation_steps=1, group_size=WORK["group"], lora_r=WORK["lora_r"],
                        lora_alpha=WORK["lora_r"], max_completion_length=WORK["completion_tokens"], max_seq_length=512,
                        learning_rate=WORK["learning_rate"], logging_steps=1, eval_steps=10 * steps,
                        save_steps=10 * steps, enable_generation_logging=False, output_dir=str(Path(output_dir) / "o"),
                        **only_reward(brevity_reward, output_dir),
                        # The speed phase keeps flat groups: resampling them would generate more than TRL does.
                        zero_variance_groups="keep" if fixed else "auto",
                        trl_options={"generation_kwargs": FIXED_LENGTH} if fixed else {})
    trainer = GRPOTrainer(config)
    trainer.load_model()
    data = prompts(model_dir)
    trainer.train(datasets.DatasetDict({"train": data, "eval": data.select([])}))  # no evaluation, as in TRL
    return trainer.trainer, trainer.trainer.args


def run_plain_trl(model_dir: str, steps: int, output_dir: str, matched: bool, fixed: bool):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=WORK["batch"],
                      num_generations=WORK["group"], max_completion_length=WORK["completion_tokens"],
                      learning_rate=WORK["learning_rate"], logging_steps=1, save_strategy="no", report_to="none",
                      use_cpu=True, generation_kwargs=FIXED_LENGTH if fixed else None,
                      **({"bf16": False, "gradient_checkpointing": False} if matched else {}))
    lora = LoraConfig(r=WORK["lora_r"], lora_alpha=WORK["lora_r"], target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                          train_dataset=prompts(model_dir), reward_funcs=brevity_reward,
                          processing_class=AutoTokenizer.from_pretrained(model_dir), peft_config=lora)
    trainer.train()
    return trainer, args


def child(which: str, steps: int, model_dir: str, fixed: bool) -> None:
    with tempfile.TemporaryDirectory() as output_dir:
        if which == "ours":
            trainer, args = run_ours(model_dir, steps, output_dir, fixed)
        else:
            trainer, args = run_plain_trl(model_dir, steps, output_dir, matched=which == "trl-matched", fixed=fixed)
    history = trainer.state.log_history
    runtime = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
    logs = [entry for entry in history if "reward" in entry]
    tokens = sum(entry["completions/mean_length"] * WORK["batch"] for entry in logs)
    print_result({"train_runtime": runtime, "completion_tokens": tokens, "rewards": [e["reward"] for e in logs],
                  "step_times": [e.get("step_time") for e in logs], "bf16": args.bf16,
                  "gradient_checkpointing": args.gradient_checkpointing,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def measure(which: str, steps: int, model_dir: str, fixed: bool) -> dict:
    return run_child(__file__, ["--child", which, "--steps", str(steps), "--model-dir", model_dir]
                     + (["--fixed-length"] if fixed else []), which)


def side_summary(results: list[dict], learning: dict, steps: int) -> dict:
    """One side's figures over its speed rounds, and its learning curve."""
    runtime = statistics.median(r["train_runtime"] for r in results)
    return {
        "steps_per_second": round(steps / runtime, 4), "median_train_seconds": round(runtime, 2),
        "completion_tokens_per_second": round(statistics.median(r["completion_tokens"] / r["train_runtime"]
                                                                for r in results), 1),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results)), "bf16": results[0]["bf16"],
        "gradient_checkpointing": results[0]["gradient_checkpointing"],
        "seconds_per_step": [[round(t, 2) for t in r["step_times"]] for r in results],
        # After the first step, which carries one-time costs (ours: the first LoRA merge, about 1.5 s).
        "steady_seconds_per_step": round(statistics.median(t for r in results for t in r["step_times"][1:]), 3),
        "learning_reward_curve": [round(value, 4) for value in learning["rewards"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--learn-steps", type=int, default=12)
    parser.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--fixed-length", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.model_dir, args.fixed_length)
        return
    from grpo_tool.example_models import smollm2_gguf
    from grpo_tool.gguf_models import converted_gguf

    model_dir = str(converted_gguf(smollm2_gguf()))
    speed = {which: [] for which in SIDES}
    for round_number in range(args.rounds):
        for which in SIDES:
            speed[which].append(measure(which, args.steps, model_dir, fixed=True))
            last = speed[which][-1]
            print(f"speed round {round_number + 1}: {which:11s} {args.steps / last['train_runtime']:.3f} steps/s, "
                  f"peak {last['peak_rss_mb']:.0f} MB", flush=True)
    learning = {}
    for which in SIDES:
        learning[which] = measure(which, args.learn_steps, model_dir, fixed=False)
        rewards = learning[which]["rewards"]
        print(f"learning: {which:11s} reward {rewards[0]:.3f} -> {rewards[-1]:.3f}", flush=True)
    summary = {which: side_summary(speed[which], learning[which], args.steps) for which in SIDES}
    report = {"benchmark": "real_model", "model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to fp32)",
              "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "steps": args.steps, "rounds": args.rounds, "learn_steps": args.learn_steps, "work": WORK, **summary,
              "speed_ratio_ours_over_trl": speed_ratio(summary["ours"], summary["trl"]),
              "speed_ratio_ours_over_trl_matched": speed_ratio(summary["ours"], summary["trl-matched"]),
              "steady_ratio_ours_over_trl": speed_ratio(summary["ours"], summary["trl"], "steady_seconds_per_step"),
              "steady_ratio_ours_over_trl_matched": speed_ratio(summary["ours"], summary["trl-matched"],
                                                                "steady_seconds_per_step")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for which in SIDES:
        curve = summary[which]["learning_reward_curve"]
        print(f"{which:11s} {summary[which]['steps_per_second']} steps/s "
              f"({summary[which]['steady_seconds_per_step']} s a step after the first), "
              f"{summary[which]['completion_tokens_per_second']} completion tokens/s, "
              f"peak {summary[which]['peak_rss_mb']} MB, reward {curve[0]} -> {curve[-1]}")
    print(f"ours / TRL defaults: {report['speed_ratio_ours_over_trl']}x (after the first step "
          f"{report['steady_ratio_ours_over_trl']}x); ours / TRL at our settings: "
          f"{report['speed_ratio_ours_over_trl_matched']}x (after the first step "
          f"{report['steady_ratio_ours_over_trl_matched']}x)  ->  {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
