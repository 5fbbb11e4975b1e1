"""Long prompts, groups of 8: this tool (prompts shared, its default), this tool with share_prompts off, and plain TRL
at the same settings, alternated, each run in a process of its own, alone on the machine.

The work: SmolLM2-135M-Instruct on prompts shaped like UltraFeedback's (an instruction over a passage of a few hundred
tokens, written here from a seeded vocabulary, as chat messages), a LoRA adapter (r 16, every linear layer), 8
completions per prompt of exactly 64 tokens (generation_kwargs min_new_tokens), 2 prompts a step (batch 8, gradient
accumulation 2), fp32 and no gradient checkpointing on every side (TRL's bf16 and checkpointing turned off, as our
defaults do on a CPU), zero_variance_groups keep on ours so that every side does the same work.

Each step's time is split into generation (TRL's `_generate_single_turn`), log-probabilities (every forward pass of
`_get_per_token_logps_and_entropies`), backward (`Accelerator.backward`) and the rest. Model FLOPs utilisation is the
useful FLOPs of that part (each prompt once per group: the floor, counted from the model's shape as --plan counts
them, grpo_tool/plan/timing.token_flops) over its measured seconds and the machine's measured matmul rate.

    python bench/shared_prompts.py [--steps 3] [--rounds 2]

Prints the figures and writes bench/results/shared_prompts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from child_run import only_reward, print_result, run_child, speed_ratio  # noqa: E402 - once the repository is on sys.path

RESULTS = ROOT / "bench" / "results" / "shared_prompts.json"
SIDES = ("ours", "ours-unshared", "trl")
WORK = {"batch": 8, "gradient_accumulation": 2, "group": 8, "completion_tokens": 64, "learning_rate": 1e-5,
        "lora_r": 16, "prompts": 24, "passage_words": 230}
FIXED_LENGTH = {"min_new_tokens": WORK["completion_tokens"]}
WORDS = ("the river valley farmers market season harvest price weather early late morning evening report council "
         "school library bridge road train station village city north south coast mountain forest storm summer "
         "winter spring autumn water energy project budget plan community local national history museum festival "
         "music children family doctor hospital science study results team players match game coach history "
         "language book chapter story author reader garden flowers trees birds animals research data system "
         "network computer software update users privacy policy company workers office meeting decision").split()
TASKS = ("Summarise the passage above in three sentences for a busy reader.",
         "List the three most important facts in the passage and explain why each matters.",
         "Write a short reply to the author of the passage, agreeing with one point and questioning another.",
         "Rewrite the passage as a news headline followed by a one-paragraph lead.")


def prompt_rows(count: int, words: int, seed: int = 0) -> list[dict]:
    """UltraFeedback-shaped prompts: an instruction over a passage, as one user message each."""
    generator = random.Random(seed)
    rows = []
    for index in range(count):
        sentences, total = [], 0
        while total < words:
            length = generator.randint(8, 18)
            sentences.append(" ".join(generator.choice(WORDS) for _ in range(length)).capitalize() + ".")
            total += length
        passage = " ".join(sentences)
        rows.append({"prompt": [{"role": "user", "content": f"Read this passage:\n\n{passage}\n\n"
                                                            f"{TASKS[index % len(TASKS)]}"}]})
    return rows


def reward(completions, **kwargs):
    """Cheap and varied, so rewards cost nothing and groups are never all equal."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [len(set(text.split())) / 40 for text in texts]


def timed(owner, name: str, spent: dict, key: str) -> None:
    """`owner.name` with the seconds it takes added to spent[key]."""
    import torch

    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            spent[key] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def run_ours(model_dir: str, steps: int, output_dir: str, shared: bool):
    import datasets

    from grpo_tool.settings import GRPOConfig
    from grpo_trainer import GRPOTrainer

    config = GRPOConfig(model_name=model_dir, max_steps=steps, per_device_train_batch_size=WORK["batch"],
                        gradient_accumulation_steps=WORK["gradient_accumulation"], group_size=WORK["group"],
                        lora_r=WORK["lora_r"], lora_alpha=WORK["lora_r"],
                        max_completion_length=WORK["completion_tokens"], max_seq_length=1024,
                        learning_rate=WORK["learning_rate"], logging_steps=1, eval_steps=10 * steps,
                        save_steps=10 * steps, enable_generation_logging=False, zero_variance_groups="keep",
                        share_prompts=None if shared else False, output_dir=str(Path(output_dir) / "o"),
                        **only_reward(reward, output_dir),
                        trl_options={"generation_kwargs": FIXED_LENGTH})
    trainer = GRPOTrainer(config)
    trainer.load_model()
    data = datasets.Dataset.from_list(prompt_rows(WORK["prompts"], WORK["passage_words"]))
    trainer.train(datasets.DatasetDict({"train": data, "eval": data.select([])}))  # no evaluation, as in TRL
    return trainer.trainer


def run_plain_trl(model_dir: str, steps: int, output_dir: str):
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=WORK["batch"],
                      gradient_accumulation_steps=WORK["gradient_accumulation"], num_generations=WORK["group"],
                      max_completion_length=WORK["completion_tokens"], learning_rate=WORK["learning_rate"],
                      logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
                      gradient_checkpointing=False, generation_kwargs=FIXED_LENGTH, loss_type="dapo")
    lora = LoraConfig(r=WORK["lora_r"], lora_alpha=WORK["lora_r"], target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                          train_dataset=datasets.Dataset.from_list(prompt_rows(WORK["prompts"],
                                                                               WORK["passage_words"])),
                          reward_funcs=reward, processing_class=AutoTokenizer.from_pretrained(model_dir),
                          peft_config=lora)
    trainer.train()
    return trainer


def child(which: str, steps: int, model_dir: str) -> None:
    import accelerate
    import torch
    import trl

    spent = {"generation": 0.0, "log_probabilities": 0.0, "backward": 0.0}
    timed(trl.GRPOTrainer, "_generate_single_turn", spent, "generation")
    timed(trl.GRPOTrainer, "_get_per_token_logps_and_entropies", spent, "log_probabilities")
    timed(accelerate.Accelerator, "backward", spent, "backward")
    with tempfile.TemporaryDirectory() as output_dir:
        if which == "trl":
            trainer = run_plain_trl(model_dir, steps, output_dir)
        else:
            trainer = run_ours(model_dir, steps, output_dir, shared=which == "ours")
    history = trainer.state.log_history
    runtime = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
    logs = [entry for entry in history if "reward" in entry]
    completions = WORK["batch"] * WORK["gradient_accumulation"]
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() \
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_result({"train_runtime": runtime, "spent": spent,
                  "completion_tokens": sum(e["completions/mean_length"] * completions for e in logs),
                  "step_times": [e.get("step_time") for e in logs], "rewards": [e["reward"] for e in logs],
                  "peak_memory_mb": peak, "args": {"bf16": trainer.args.bf16,
                                                   "gradient_checkpointing": trainer.args.gradient_checkpointing,
                                                   "loss_type": trainer.args.loss_type}})


def measure(which: str, steps: int, model_dir: str) -> dict:
    return run_child(__file__, ["--child", which, "--steps", str(steps), "--model-dir", model_dir], which)


def useful_flops(model_dir: str) -> dict:
    """The FLOPs a step cannot do without (each prompt once per group), by the plan's count, and the prompt length."""
    from transformers import AutoTokenizer

    from grpo_tool.model_shapes import find_shape
    from grpo_tool.plan.timing import token_flops

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                                 return_dict=False))
               for row in prompt_rows(WORK["prompts"], WORK["passage_words"])]
    shape = find_shape(model_dir)
    P, C = statistics.mean(lengths), WORK["completion_tokens"]
    completions = WORK["batch"] * WORK["gradient_accumulation"]
    groups = completions // WORK["group"]
    prompt_pass = groups * P * token_flops(shape, P / 2)[0]
    blocks, head = token_flops(shape, P + C / 2)
    completion_pass = completions * C * (blocks + head)
    return {"prompt_tokens_mean": round(P, 1), "prompt_tokens_range": [min(lengths), max(lengths)],
            "generation": prompt_pass + completion_pass,
            "training": 2 * (prompt_pass + completion_pass)}  # LoRA: a forward and the activations' backward


def side_summary(results: list[dict], steps: int, flops: dict, rate: float) -> dict:
    runtime = statistics.median(r["train_runtime"] for r in results)
    split = {part: round(statistics.median(r["spent"][part] for r in results) / steps, 3)
             for part in ("generation", "log_probabilities", "backward")}
    split["other"] = round(runtime / steps - sum(split.values()), 3)
    training_seconds = split["log_probabilities"] + split["backward"]
    return {
        "steps_per_second": round(steps / runtime, 4), "median_train_seconds": round(runtime, 2),
        "completion_tokens_per_second": round(statistics.median(r["completion_tokens"] / r["train_runtime"]
                                                                for r in results), 1),
        "peak_memory_mb": round(max(r["peak_memory_mb"] for r in results)),
        "seconds_per_step_split": split,
        "mfu": {"generation": round(flops["generation"] / split["generation"] / rate, 4),
                "training": round(flops["training"] / training_seconds / rate, 4)},
        "seconds_per_step": [[round(t, 2) for t in r["step_times"]] for r in results],
        # After the first step, which carries one-time costs on every side (warm-up, first allocations).
        "steady_seconds_per_step": round(statistics.median(t for r in results for t in r["step_times"][1:]), 2),
        "args": results[0]["args"],
    }


def matmul_rate() -> float:
    """FLOP/s of this machine's float32 matrix product, as --plan measures it."""
    from grpo_tool.plan.device import Device

    return max(Device.detect(None).tflops for _ in range(3)) * 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.model_dir)
        return
    from grpo_tool.example_models import smollm2_gguf
    from grpo_tool.gguf_models import converted_gguf

    model_dir = str(converted_gguf(smollm2_gguf()))
    runs = {which: [] for which in SIDES}
    for round_number in range(args.rounds):
        for which in SIDES:
            runs[which].append(measure(which, args.steps, model_dir))
            last = runs[which][-1]
            print(f"round {round_number + 1}: {which:13s} {args.steps / last['train_runtime']:.4f} steps/s "
                  f"({', '.join(f'{k} {v / args.steps:.2f} s' for k, v in last['spent'].items())} a step)", flush=True)
    flops, rate = useful_flops(model_dir), matmul_rate()
    summary = {which: side_summary(runs[which], args.steps, flops, rate) for which in SIDES}
    report = {"benchmark": "shared_prompts", "model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to fp32)",
              "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "steps": args.steps, "rounds": args.rounds, "work": WORK,
              "prompt_tokens_mean": flops["prompt_tokens_mean"], "prompt_tokens_range": flops["prompt_tokens_range"],
              "useful_flops_per_step": {"generation": flops["generation"], "training": flops["training"]},
              "matmul_flops_per_second": rate, **summary,
              "speed_ratio_ours_over_trl": speed_ratio(summary["ours"], summary["trl"]),
              "speed_ratio_unshared_over_trl": speed_ratio(summary["ours-unshared"], summary["trl"]),
              "steady_ratio_ours_over_trl": speed_ratio(summary["ours"], summary["trl"], "steady_seconds_per_step")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"prompts {flops['prompt_tokens_mean']} tokens on average; matmul {rate / 1e9:.0f} GFLOP/s")
    for which in SIDES:
        side = summary[which]
        print(f"{which:13s} {side['steps_per_second']} steps/s, {side['completion_tokens_per_second']} completion "
              f"tokens/s, peak {side['peak_memory_mb']} MB, per step {side['seconds_per_step_split']}, "
              f"MFU generation {side['mfu']['generation']:.1%} training {side['mfu']['training']:.1%}")
    print(f"ours / TRL: {report['speed_ratio_ours_over_trl']}x (after the first step "
          f"{report['steady_ratio_ours_over_trl']}x); ours unshared / TRL: "
          f"{report['speed_ratio_unshared_over_trl']}x  ->  {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
