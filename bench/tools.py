"""Learning to use a tool, on the real SmolLM2-135M-Instruct: products of a two-digit and a three-digit number (which a
135M model cannot work out in its head), trained with the built-in calculator (`--tools calculator`, the bundled
`chatml_tools` template) and, with the same steps and settings, without it; `answer_match` is the reward of both.

Measured on held-out problems never trained on, answered at a temperature of 0.01 (greedy in effect) through the
tool's own episode sampler: the share of completions that make a well-formed tool call before and after training
(`tool_call_rate_start`, `tool_call_rate_end`), and exact-answer accuracy with tools and without. Each side trains in a
process of its own, one after the other.

    python bench/tools.py [--steps 30] [--learning-rate 5e-4]

Prints the figures and writes bench/results/tools.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from child_run import child_flags, print_result, run_child  # noqa: E402 - once the repository is on sys.path

RESULTS = ROOT / "bench" / "results" / "tools.json"
SIDES = ("with_tools", "without_tools")
PHRASINGS = ("What is {a} times {b}?", "Compute {a} * {b}.", "A box holds {b} items. How many items are in {a} boxes?",
             "Multiply {a} by {b}.")
SYSTEM = {
    "with_tools": ("You are good at arithmetic because you use the calculator tool. For any multiplication, first call "
                   "the calculator, for example:\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": "
                   "{\"expression\": \"23 * 417\"}}\n</tool_call>\nThen read its result and give the final answer as "
                   "a number."),
    "without_tools": "You are good at arithmetic. Work the multiplication out, then give the final answer as a number.",
}


def problems(seed: int, train_count: int, eval_count: int) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows), {"prompt", "answer"}, with no (a, b) pair in both."""
    rng = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < train_count + eval_count:
        a, b = rng.randint(11, 99), rng.randint(101, 999)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        rows.append({"prompt": rng.choice(PHRASINGS).format(a=a, b=b), "answer": str(a * b)})
    return rows[:train_count], rows[train_count:]


def config_for(which: str, model_dir: str, settings: dict, output_dir: str):
    from grpo_tool.settings import GRPOConfig

    tools = {"tools": ["calculator"], "chat_template": "chatml_tools", "max_tool_calls": 2} \
        if which == "with_tools" else {}
    return GRPOConfig(
        model_name=model_dir, reward_config_name="verifiable", max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch"], gradient_accumulation_steps=1, group_size=settings["group"],
        per_device_eval_batch_size=settings["batch"], lora_r=16, lora_alpha=16,
        max_completion_length=settings["completion_tokens"], max_seq_length=1024,
        learning_rate=settings["learning_rate"], temperature=settings["temperature"], logging_steps=1,
        eval_steps=settings["steps"], save_steps=settings["steps"], max_eval_samples=4, max_generation_samples=4,
        system_prompt=SYSTEM[which], seed=settings["seed"], output_dir=output_dir, **tools)


def measure(trainer, held_out, config) -> dict:
    """Answers to every held-out prompt at temperature 0.01, as episodes when the run has tools."""
    from dataclasses import replace

    from grpo_tool.reward_config import load_reward_config
    from grpo_tool.sampling import sample
    from rewards import rule_components

    (reward,) = rule_components(load_reward_config("verifiable"))
    quiet = replace(config, temperature=0.01)
    samples = []
    for start in range(0, len(held_out), 25):
        samples += sample(trainer.model, trainer.tokenizer, held_out.select(range(start, min(start + 25,
                                                                                            len(held_out)))),
                          quiet, toolbox=trainer.toolbox)
    scores = reward.function([entry["reward_input"] for entry in samples], answer=list(held_out["answer"]))
    calls = [entry.get("tool_calls", 0) for entry in samples]
    return {"accuracy": sum(score == 1.0 for score in scores) / len(scores),
            "tool_call_rate": sum(count > 0 for count in calls) / len(calls),
            "shown": [{"prompt": entry["prompt"][-1]["content"], "answer": reference,
                       "completion": entry["completion"] if "turns" not in entry else transcript_of(entry),
                       "right": score == 1.0}
                      for entry, reference, score in list(zip(samples, held_out["answer"], scores))[:6]]}


def transcript_of(entry: dict) -> str:
    from grpo_tool.messages import transcript

    return transcript(entry["turns"])


def child(which: str, model_dir: str, settings: dict) -> None:
    import datasets

    from grpo_tool.prompt_budget import fit_to_model
    from grpo_trainer import GRPOTrainer

    train_rows, held_out_rows = problems(settings["seed"], settings["train_problems"], settings["held_out_problems"])
    with tempfile.TemporaryDirectory() as output_dir:
        config = config_for(which, model_dir, settings, output_dir)
        trainer = GRPOTrainer(config)
        trainer.load_model()
        data = trainer.prepare_data(datasets.DatasetDict({"train": datasets.Dataset.from_list(train_rows),
                                                          "eval": datasets.Dataset.from_list(held_out_rows[:4])}))
        every = datasets.Dataset.from_list(held_out_rows)
        held_out = fit_to_model(datasets.DatasetDict({"train": every, "eval": every.select(range(1))}),
                                trainer.tokenizer, config, None, trainer.toolbox.all_tools())["train"]
        start = time.perf_counter()
        before = measure(trainer, held_out, config)
        trainer.train(data)
        after = measure(trainer, held_out, config)
        seconds = time.perf_counter() - start
        history = trainer.trainer.state.log_history
    logs = [entry for entry in history if "reward" in entry and "eval_reward" not in entry]
    print_result({"before": before, "after": after, "seconds": seconds,
                  "train_seconds": next(entry["train_runtime"] for entry in history if "train_runtime" in entry),
                  "reward_curve": [entry["reward"] for entry in logs],
                  "call_curve": [entry.get("tools/call_frequency") for entry in logs]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=8, help="completions per step")
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--completion-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--held-out", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sides", default=",".join(SIDES))
    child_flags(parser, SIDES)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model_dir, json.loads(args.settings))
        return
    from grpo_tool.example_models import smollm2_gguf
    from grpo_tool.gguf_models import converted_gguf

    settings = {"steps": args.steps, "learning_rate": args.learning_rate, "batch": args.batch, "group": args.group,
                "completion_tokens": args.completion_tokens, "temperature": args.temperature, "seed": args.seed,
                "held_out_problems": args.held_out, "train_problems": args.steps * args.batch // args.group}
    model_dir = str(converted_gguf(smollm2_gguf()))
    measured = {}
    for which in args.sides.split(","):
        measured[which] = result = run_child(__file__, ["--child", which, "--model-dir", model_dir,
                                                        "--settings", json.dumps(settings)], which)
        print(f"{which:13s} accuracy {result['before']['accuracy']:.0%} -> {result['after']['accuracy']:.0%}, tool "
              f"calls {result['before']['tool_call_rate']:.0%} -> {result['after']['tool_call_rate']:.0%} of "
              f"completions, {result['train_seconds']:.0f} s of training", flush=True)
    report = {"benchmark": "tools", "model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to fp32)",
              "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "task": "products of a two-digit and a three-digit number; held-out problems never trained on",
              "settings": {**settings, "lora_r": 16, "reward": "answer_match (the verifiable preset)",
                           "system_prompts": SYSTEM, "chat_template": "chatml_tools", "max_tool_calls": 2}}
    tools_side, plain = measured.get("with_tools"), measured.get("without_tools")
    if tools_side:
        report["tool_call_rate_start"] = round(tools_side["before"]["tool_call_rate"], 4)
        report["tool_call_rate_end"] = round(tools_side["after"]["tool_call_rate"], 4)
        report["accuracy_with_tools"] = round(tools_side["after"]["accuracy"], 4)
    if plain:
        report["accuracy_without_tools"] = round(plain["after"]["accuracy"], 4)
    for which, result in measured.items():
        report[which] = {"accuracy_before": round(result["before"]["accuracy"], 4),
                         "accuracy_after": round(result["after"]["accuracy"], 4),
                         "tool_call_rate_before": round(result["before"]["tool_call_rate"], 4),
                         "tool_call_rate_after": round(result["after"]["tool_call_rate"], 4),
                         "train_seconds": round(result["train_seconds"], 1),
                         "reward_curve": [round(value, 4) for value in result["reward_curve"]],
                         "call_curve": result["call_curve"],
                         "answers_before": result["before"]["shown"], "answers_after": result["after"]["shown"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
