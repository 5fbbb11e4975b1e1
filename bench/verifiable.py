"""GRPO on answers a program checks, on the real SmolLM2-135M-Instruct: held-out exact-answer accuracy before and
after, through this tool (answer_match, the `verifiable` preset) and through plain TRL with the same reward function.

The task, written here from a seed: multiplication word problems ("Ben has 3 boxes with 6 books in each box. How many
books does Ben have?") in a few phrasings, as {"prompt", "answer"} rows. The 64 products of 2..9 are split: the
held-out problems use 16 pairs the training problems never use, so a gain there is the skill, not memorised facts.
Accuracy is greedy decoding of every held-out prompt, scored by answer_match (the final answer read out of the
completion and compared with the reference). Both sides train the same LoRA (r 16 on every linear layer) with the
same settings, each in a process of its own, one after the other; TRL runs at the settings our defaults choose on a
CPU (fp32, no gradient checkpointing) so that the two differ only in the tool.

    python bench/verifiable.py [--steps 40] [--learning-rate 5e-4]

Prints the figures and writes bench/results/verifiable.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from child_run import child_flags, print_result, run_child  # noqa: E402 - once the repository is on sys.path

RESULTS = ROOT / "bench" / "results" / "verifiable.json"
SIDES = ("ours", "trl")
NAMES = ("Tom", "Anna", "Sam", "Lily", "Ben", "Mia", "Omar", "Zoe", "Raj", "Ines")
ITEMS = ("apples", "books", "marbles", "pencils", "cookies", "stickers", "stamps", "shells")
PHRASINGS = (
    "{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have?",
    "There are {a} bags and each bag holds {b} {item}. How many {item} are there in all?",
    "{name} buys {a} packs of {item}. Each pack has {b} {item}. How many {item} does {name} buy?",
)
HELD_OUT_PAIRS = 16  # of the 64 (a, b) pairs, these appear only in held-out problems


def problems(seed: int, train_count: int, eval_count: int) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows), each {"prompt", "answer"}, from disjoint multiplication facts."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in range(2, 10) for b in range(2, 10)]
    rng.shuffle(pairs)
    held_out, training = pairs[:HELD_OUT_PAIRS], pairs[HELD_OUT_PAIRS:]

    def rows(facts, count):
        made, seen = [], set()
        while len(made) < count:
            a, b = rng.choice(facts)
            prompt = rng.choice(PHRASINGS).format(name=rng.choice(NAMES), item=rng.choice(ITEMS), a=a, b=b)
            if prompt not in seen:
                seen.add(prompt)
                made.append({"prompt": prompt, "answer": str(a * b)})
        return made

    return rows(training, train_count), rows(held_out, eval_count)


def answer_match():
    """The tool's answer_match component, the one function both sides train on."""
    from grpo_tool.reward_config import load_reward_config
    from rewards import rule_components

    (component,) = rule_components(load_reward_config("verifiable"))
    return component.function


def fitted(model_dir: str, rows: list[dict], settings: dict):
    """The rows as the tool gives them to this model (chat messages): both sides see the same prompts."""
    import datasets
    from transformers import AutoTokenizer

    from grpo_tool.prompt_budget import fit_to_model
    from grpo_tool.settings import GRPOConfig

    config = GRPOConfig(model_name=model_dir, max_seq_length=512, max_completion_length=settings["completion_tokens"])
    table = datasets.Dataset.from_list(rows)
    data = datasets.DatasetDict({"train": table, "eval": table.select([])})
    return fit_to_model(data, AutoTokenizer.from_pretrained(model_dir), config)["train"]


def accuracy(model, tokenizer, held_out, settings: dict) -> tuple[float, list[dict]]:
    """Greedy answers to every held-out prompt, scored by answer_match: (share right, the answers)."""
    import torch

    reward = answer_match()
    prompts = list(held_out["prompt"])
    texts = [tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False) for prompt in prompts]
    answers = []
    model.eval()
    for start in range(0, len(texts), 50):
        encoded = tokenizer(texts[start:start + 50], return_tensors="pt", padding=True, padding_side="left",
                            add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**encoded, max_new_tokens=settings["completion_tokens"], do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        answers += tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    scores = reward(answers, answer=list(held_out["answer"]))
    shown = [{"prompt": prompt[-1]["content"], "answer": reference, "completion": text, "right": score == 1.0}
             for prompt, reference, text, score in zip(prompts, held_out["answer"], answers, scores)]
    return sum(score == 1.0 for score in scores) / len(scores), shown


def run_ours(model_dir: str, train, held_out, settings: dict, output_dir: str):
    import datasets

    from grpo_tool.settings import GRPOConfig
    from grpo_trainer import GRPOTrainer

    config = GRPOConfig(
        model_name=model_dir, reward_config_name="verifiable", max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch"], gradient_accumulation_steps=1, group_size=settings["group"],
        per_device_eval_batch_size=settings["batch"], lora_r=16, lora_alpha=16,
        max_completion_length=settings["completion_tokens"], max_seq_length=512,
        learning_rate=settings["learning_rate"], temperature=settings["temperature"], logging_steps=1,
        eval_steps=settings["steps"], save_steps=settings["steps"], max_eval_samples=4, max_generation_samples=4,
        seed=settings["seed"], output_dir=str(Path(output_dir) / "ours"))
    trainer = GRPOTrainer(config)
    data = trainer.load_data(datasets.DatasetDict({"train": train, "eval": held_out.select(range(4))}))
    trainer.load_model()
    before = accuracy(trainer.model, trainer.tokenizer, held_out, settings)
    trainer.train(data)
    log = json.loads(next((Path(output_dir) / "ours" / "generation_logs").glob("*.json")).read_text())
    return trainer.trainer, trainer.model, trainer.tokenizer, before, log


def run_plain_trl(model_dir: str, train, held_out, settings: dict, output_dir: str):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = GRPOConfig(output_dir=output_dir, max_steps=settings["steps"], per_device_train_batch_size=settings["batch"],
                      num_generations=settings["group"], max_completion_length=settings["completion_tokens"],
                      learning_rate=settings["learning_rate"], temperature=settings["temperature"], logging_steps=1,
                      save_strategy="no", report_to="none", use_cpu=True, bf16=False, gradient_checkpointing=False,
                      seed=settings["seed"])
    lora = LoraConfig(r=16, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    before = accuracy(model, tokenizer, held_out, settings)
    trainer = GRPOTrainer(model=model, args=args, train_dataset=train, reward_funcs=answer_match(),
                          processing_class=tokenizer, peft_config=lora)
    trainer.train()
    return trainer, trainer.model, tokenizer, before, None


def child(which: str, model_dir: str, settings: dict) -> None:
    train_rows, held_out_rows = problems(settings["seed"], settings["train_problems"], settings["held_out_problems"])
    train, held_out = fitted(model_dir, train_rows, settings), fitted(model_dir, held_out_rows, settings)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as output_dir:
        run = run_ours if which == "ours" else run_plain_trl
        trainer, model, tokenizer, before, log = run(model_dir, train, held_out, settings, output_dir)
    seconds = time.perf_counter() - start
    after = accuracy(model, tokenizer, held_out, settings)
    history = trainer.state.log_history
    logs = [entry for entry in history if "reward" in entry and "eval_reward" not in entry]
    print_result({"accuracy_before": before[0], "accuracy_after": after[0], "answers_before": before[1],
                  "answers_after": after[1], "generation_log": log,
                  "train_seconds": next(entry["train_runtime"] for entry in history if "train_runtime" in entry),
                  "seconds": seconds, "reward_curve": [entry["reward"] for entry in logs],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def task_arguments(parser: argparse.ArgumentParser, held_out: int, children: tuple[str, ...]) -> None:
    """The task's and training's flags, shared with bench/zero_variance.py, and the child process's hidden ones."""
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=8, help="completions per step")
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--completion-tokens", type=int, default=48)
    parser.add_argument("--held-out", type=int, default=held_out)
    parser.add_argument("--seed", type=int, default=7)
    child_flags(parser, children)


def task_settings(args: argparse.Namespace) -> dict:
    """The settings `task_arguments`' flags give, as the child processes read them."""
    return {"learning_rate": args.learning_rate, "batch": args.batch, "group": args.group,
            "completion_tokens": args.completion_tokens, "seed": args.seed, "held_out_problems": args.held_out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--sides", default=",".join(SIDES))
    task_arguments(parser, held_out=100, children=SIDES)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model_dir, json.loads(args.settings))
        return
    from grpo_tool.example_models import smollm2_gguf
    from grpo_tool.gguf_models import converted_gguf

    settings = {"steps": args.steps, "temperature": args.temperature,
                "train_problems": args.steps * args.batch // args.group, **task_settings(args)}
    model_dir = str(converted_gguf(smollm2_gguf()))
    measured = {}
    for which in args.sides.split(","):
        measured[which] = run_child(__file__, ["--child", which, "--model-dir", model_dir,
                                               "--settings", json.dumps(settings)], which)
        result = measured[which]
        curve = result["reward_curve"]
        print(f"{which:5s} held-out accuracy {result['accuracy_before']:.0%} -> {result['accuracy_after']:.0%}, "
              f"reward {sum(curve[:5]) / 5:.3f} (first 5 steps) -> {sum(curve[-5:]) / 5:.3f} (last 5), "
              f"{result['train_seconds']:.0f} s of training", flush=True)
    report = {"benchmark": "verifiable", "model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to fp32)",
              "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "task": "multiplication word problems, 2..9 x 2..9, held-out problems on facts never trained on",
              "settings": {**settings, "lora_r": 16, "reward": "answer_match (the verifiable preset)",
                           "trl_settings": "bf16 off, gradient checkpointing off, as ours on a CPU"}}
    for which, result in measured.items():
        report[which] = {
            "held_out_accuracy_before": round(result["accuracy_before"], 4),
            "held_out_accuracy_after": round(result["accuracy_after"], 4),
            "gain_points": round(100 * (result["accuracy_after"] - result["accuracy_before"]), 1),
            "reward_curve": [round(value, 4) for value in result["reward_curve"]],
            "train_seconds": round(result["train_seconds"], 1), "peak_rss_mb": round(result["peak_rss_mb"]),
            "answers": [{"prompt": b["prompt"], "answer": b["answer"], "before": b["completion"],
                         "after": a["completion"], "right_after": a["right"]}
                        for b, a in list(zip(result["answers_before"], result["answers_after"]))[:6]],
        }
        if result["generation_log"]:
            report[which]["generation_log"] = result["generation_log"]  # sampled at the training temperature
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
