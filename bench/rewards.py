"""Reward scoring speed: completions of realistic length, with references, through the whole `multi` set.

    python bench/rewards.py [--completions 10000] [--batch 64]

Scores the completions in TRL-sized batches on one core (torch and tokenizers are not involved; the rule rewards are
pure Python), as training hands them over: groups of `--group` completions of one prompt, sharing that prompt's
chosen and rejected answers. Prints completions per second for each component and for the set, and writes
bench/results/rewards.json. Target: at least 20,000 completions/s, so that scoring is never a step's bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grpo_tool.reward_config import load_reward_config  # noqa: E402 - once the repository is on sys.path
from grpo_tool.scoring import build_reward_functions  # noqa: E402 - once the repository is on sys.path
from rewards import rule_components  # noqa: E402 - once the repository is on sys.path

RESULTS = ROOT / "bench" / "results" / "rewards.json"
WORDS = ("the answer is correct because water boils at one hundred degrees and the capital of France is Paris so "
         "yes that is right 정확 완벽 모르겠 we think it depends on the question and on what you asked").split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=64, help="completions per reward call, as in a TRL step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (group_size)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    rng = random.Random(0)
    # Realistic lengths: completions of 50-300 words, references of 30-200.
    completions = [text(rng, rng.randint(50, 300)) for _ in range(args.completions)]
    prompt_count = -(-args.completions // args.group)
    per_prompt = [(text(rng, 20), text(rng, rng.randint(30, 200)), text(rng, rng.randint(30, 200)))
                  for _ in range(prompt_count)]
    prompts, chosen, rejected = ([row[i] for row in per_prompt for _ in range(args.group)][:args.completions]
                                 for i in range(3))
    components = rule_components(load_reward_config("balanced"))
    functions, _ = build_reward_functions(components, "multi")

    def run(function) -> float:
        start = time.perf_counter()
        for begin in range(0, args.completions, args.batch):
            end = begin + args.batch
            function(completions[begin:end], prompts=prompts[begin:end], chosen=chosen[begin:end],
                     rejected=rejected[begin:end], completion_ids=None, trainer_state=None)
        return time.perf_counter() - start

    per_component = {}
    for component, function in zip(components, functions):
        seconds = run(function)
        per_component[component.name] = round(args.completions / seconds)
        print(f"{component.name:10s} {args.completions / seconds:>10,.0f} completions/s")
    total_seconds = sum(args.completions / rate for rate in per_component.values())
    overall = args.completions / total_seconds
    print(f"{'multi set':10s} {overall:>10,.0f} completions/s (target 20,000)")
    report = {"benchmark": "rewards", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "cores_used": 1, "completions": args.completions, "batch": args.batch, "group": args.group,
              "completion_words": "50-300", "reference_words": "30-200",
              "completions_per_second": {**per_component, "multi_set": round(overall)},
              "target": 20_000, "meets_target": overall >= 20_000}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
