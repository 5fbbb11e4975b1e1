"""The code_tests reward: what the sandbox costs per program, and what it teaches the real SmolLM2-135M-Instruct.

1. Throughput. The same programs (a small function and three asserts, as an MBPP row has) run as a bare subprocess,
   `python -I -c PROGRAM`, and through the bubblewrap sandbox with its limits and its judge, both with one program per
   core at once. Reported: programs per second each way and the ratio of time per program (target: at most 2).
2. Learning. SmolLM2-135M-Instruct trained with `--reward-config code` (the share of a row's tests passed) on simple
   function-writing problems (MBPP's layout: the task, then the tests that name the function), LoRA r16. Held-out
   problems, never trained on, answered greedily before and after: the share whose program passes all its tests.
   The reward's mean at every step is kept.

    python bench/code_rewards.py [--steps 20] [--skip-training (throughput only; keeps the training figures)]

Prints the figures and writes bench/results/code_rewards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from child_run import child_flags, print_result, run_child  # noqa: E402 - once the repository is on sys.path

RESULTS = ROOT / "bench" / "results" / "code_rewards.json"
NAMES = ("solve", "compute", "result", "answer", "transform", "calc", "work", "value_of")
# (what the function does, its argument, tests as (argument, expected) pairs, from a constant k)
FAMILIES = [
    ("returns x plus {k}", "x", lambda k: [(1, 1 + k), (-k, 0), (10, 10 + k)]),
    ("returns x multiplied by {k}", "x", lambda k: [(1, k), (0, 0), (3, 3 * k)]),
    ("returns the square of x plus {k}", "x", lambda k: [(2, 4 + k), (0, k), (-3, 9 + k)]),
    ("returns the list xs with every number increased by {k}", "xs", lambda k: [([1, 2], [1 + k, 2 + k]), ([], []),
                                                                                 ([0], [k])]),
    ("returns the sum of the numbers in the list xs, plus {k}", "xs", lambda k: [([1, 2, 3], 6 + k), ([], k),
                                                                                ([5], 5 + k)]),
    ("returns True when x is greater than {k}, else False", "x", lambda k: [(k + 1, True), (k, False),
                                                                           (k - 5, False)]),
    ("returns the string s repeated {k} times", "s", lambda k: [("ab", "ab" * k), ("", ""), ("x", "x" * k)]),
    ("returns the first {k} characters of the string s", "s",
     lambda k: [("abcdefghij", "abcdefghij"[:k]), ("", ""), ("xyzxyzxyzxyz", "xyzxyzxyzxyz"[:k])]),
]


def problems(seed: int, count: int) -> list[dict]:
    """Rows in MBPP's layout ({"text", "test_list"}), each a family with its own constant and function name."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        family, k, name = rng.randrange(len(FAMILIES)), rng.randint(2, 9), rng.choice(NAMES)
        if (family, k, name) in seen:
            continue
        seen.add((family, k, name))
        does, argument, cases = FAMILIES[family]
        rows.append({"text": f"Write a Python function {name}({argument}) that {does.format(k=k)}. Give the code in "
                             "a ```python block.",
                     "test_list": [f"assert {name}({given!r}) == {expected!r}" for given, expected in cases(k)]})
    return rows


# 1. Throughput.

PROGRAM = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]


def throughput(programs: int, rounds: int) -> dict:
    from grpo_tool.code_tests import make_code_tests_reward
    from grpo_tool.sandbox import workers

    reward = make_code_tests_reward({"mode": "share", "sandbox": "bwrap", "timeout": 10, "memory_mb": 1024})
    completions = [f"```python\n{PROGRAM}```"] * programs
    reward(completions[:1], test_list=[TESTS])  # the sandbox's containment check, once, outside the timing
    bare_source = PROGRAM + "\n".join(TESTS) + "\n"

    def bare(_):
        subprocess.run([sys.executable, "-I", "-c", bare_source], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)

    timings = {"bare": [], "sandbox": []}
    for _ in range(rounds):
        start = time.perf_counter()
        with ThreadPoolExecutor(workers()) as pool:
            list(pool.map(bare, range(programs)))
        timings["bare"].append(time.perf_counter() - start)
        start = time.perf_counter()
        scores = reward(completions, test_list=[TESTS] * programs)
        timings["sandbox"].append(time.perf_counter() - start)
        assert scores == [1.0] * programs, scores
    bare_seconds, sandbox_seconds = statistics.median(timings["bare"]), statistics.median(timings["sandbox"])
    return {"programs": programs, "rounds": rounds, "parallel": workers(),
            "bare_programs_per_second": round(programs / bare_seconds, 1),
            "sandbox_programs_per_second": round(programs / sandbox_seconds, 1),
            "time_per_program_ratio": round(sandbox_seconds / bare_seconds, 3),
            "seconds": {name: [round(value, 3) for value in values] for name, values in timings.items()}}


# 2. Learning.

def measure(trainer, held_out, config) -> dict:
    """Held-out answers at temperature 0.01: the share whose program passes every test."""
    from dataclasses import replace

    from grpo_tool.code_tests import make_code_tests_reward
    from grpo_tool.sampling import sample

    reward = make_code_tests_reward({"mode": "all", "sandbox": "bwrap", "timeout": 10, "memory_mb": 1024})
    quiet = replace(config, temperature=0.01)
    samples = []
    for start in range(0, len(held_out), 16):
        samples += sample(trainer.model, trainer.tokenizer, held_out.select(range(start, min(start + 16,
                                                                                            len(held_out)))), quiet)
    scores = reward([entry["reward_input"] for entry in samples], test_list=list(held_out["test_list"]))
    return {"pass_rate": sum(score == 1.0 for score in scores) / len(scores),
            "shown": [{"prompt": entry["prompt"][-1]["content"], "completion": entry["completion"], "passed": score}
                      for entry, score in list(zip(samples, scores))[:6]]}


def child(model_dir: str, settings: dict) -> None:
    import datasets

    from grpo_tool.prompt_budget import fit_to_model
    from grpo_tool.schemas import with_tests
    from grpo_tool.settings import GRPOConfig
    from grpo_trainer import GRPOTrainer

    rows = problems(settings["seed"], settings["train_problems"] + settings["held_out_problems"])
    train_rows, held_out_rows = rows[:settings["train_problems"]], rows[settings["train_problems"]:]
    with tempfile.TemporaryDirectory() as output_dir:
        config = GRPOConfig(
            model_name=model_dir, reward_config_name="code", max_steps=settings["steps"],
            per_device_train_batch_size=settings["batch"], gradient_accumulation_steps=1,
            group_size=settings["group"], per_device_eval_batch_size=settings["batch"], lora_r=16, lora_alpha=16,
            max_completion_length=settings["completion_tokens"], max_seq_length=1024,
            learning_rate=settings["learning_rate"], temperature=settings["temperature"], logging_steps=1,
            eval_steps=settings["steps"], save_steps=settings["steps"], max_eval_samples=4, max_generation_samples=4,
            seed=settings["seed"], output_dir=output_dir)
        trainer = GRPOTrainer(config)
        trainer.load_model()
        data = trainer.prepare_data(datasets.DatasetDict({"train": datasets.Dataset.from_list(train_rows),
                                                          "eval": datasets.Dataset.from_list(held_out_rows[:4])}))
        every = datasets.Dataset.from_list([{"prompt": with_tests(row["text"], row["test_list"]),
                                             "test_list": row["test_list"]} for row in held_out_rows])
        held_out = fit_to_model(datasets.DatasetDict({"train": every, "eval": every.select(range(1))}),
                                trainer.tokenizer, config, None)["train"]
        before = measure(trainer, held_out, config)
        trainer.train(data)
        after = measure(trainer, held_out, config)
        history = trainer.trainer.state.log_history
    logs = [entry for entry in history if "reward" in entry and "eval_reward" not in entry]
    print_result({"before": before, "after": after,
                  "train_seconds": next(entry["train_runtime"] for entry in history if "train_runtime" in entry),
                  "reward_curve": [entry["reward"] for entry in logs]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=8, help="completions per step")
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--completion-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-training", action="store_true")
    child_flags(parser)
    args = parser.parse_args()
    if args.child:
        child(args.model_dir, json.loads(args.settings))
        return
    report = {"benchmark": "code_rewards", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "python": platform.python_version()}
    if args.skip_training and RESULTS.is_file():  # the training figures already there stay
        report = {**json.loads(RESULTS.read_text()), **report}
    report["throughput"] = speed = throughput(args.programs, args.rounds)
    print(f"throughput: bare {speed['bare_programs_per_second']} programs/s, sandbox "
          f"{speed['sandbox_programs_per_second']} programs/s ({speed['parallel']} at once): "
          f"{speed['time_per_program_ratio']:.2f}x the bare subprocess's time per program", flush=True)
    if not args.skip_training:
        from grpo_tool.example_models import smollm2_gguf
        from grpo_tool.gguf_models import converted_gguf

        settings = {"steps": args.steps, "learning_rate": args.learning_rate, "batch": args.batch,
                    "group": args.group, "completion_tokens": args.completion_tokens,
                    "temperature": args.temperature, "seed": args.seed, "held_out_problems": args.held_out,
                    "train_problems": args.steps * args.batch // args.group}
        model_dir = str(converted_gguf(smollm2_gguf()))
        result = run_child(__file__, ["--child", "--model-dir", model_dir, "--settings", json.dumps(settings)],
                           "training")
        report["model"] = "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to fp32)"
        report["task"] = ("write a small Python function (8 families, each with its own constant and name), MBPP's "
                          "layout; held-out problems never trained on")
        report["settings"] = {**settings, "lora_r": 16, "reward": "code_tests, share of tests (the code preset)"}
        report["pass_rate_before"] = round(result["before"]["pass_rate"], 4)
        report["pass_rate_after"] = round(result["after"]["pass_rate"], 4)
        report["reward_curve"] = [round(value, 4) for value in result["reward_curve"]]
        report["train_seconds"] = round(result["train_seconds"], 1)
        report["answers_before"], report["answers_after"] = result["before"]["shown"], result["after"]["shown"]
        curve = report["reward_curve"]
        print(f"held-out pass rate {report['pass_rate_before']:.0%} -> {report['pass_rate_after']:.0%}; reward mean "
              f"{statistics.mean(curve[:5]):.3f} over the first 5 steps, {statistics.mean(curve[-5:]):.3f} over the "
              f"last 5; {report['train_seconds']:.0f} s of training", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
