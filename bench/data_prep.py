"""Data preparation speed: a generated file of each schema converted to prompts, first from scratch, then again from
the datasets cache.

    python bench/data_prep.py [--rows 100000]

Prints rows per second for each schema and the cached reload time, and writes bench/results/data_prep.json. Targets:
at least 50,000 rows/s for the original's custom format, and a second load under 2 s.
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

RESULTS = ROOT / "bench" / "results" / "data_prep.json"
WORDS = ("the model answers a question about rivers cities numbers colours animals weather history music food "
         "science travel language sport").split()


def sentence(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + "."


def custom_row(rng, i):
    return {"prompt": f"Question {i}: {sentence(rng, 12)}", "chosen": sentence(rng, 40), "rejected": sentence(rng, 30)}


def ultrafeedback_row(rng, i):
    prompt = f"Question {i}: {sentence(rng, 12)}"
    chosen, rejected = sentence(rng, 40), sentence(rng, 30)
    return {"prompt": prompt, "prompt_id": f"{i:064x}",
            "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
            "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": rejected}],
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
            "score_chosen": 8.0, "score_rejected": 4.0}


def hh_row(rng, i):
    shared = (f"\n\nHuman: Question {i}: {sentence(rng, 12)}\n\nAssistant: {sentence(rng, 20)}"
              f"\n\nHuman: {sentence(rng, 8)}")
    return {"chosen": f"{shared}\n\nAssistant: {sentence(rng, 40)}",
            "rejected": f"{shared}\n\nAssistant: {sentence(rng, 30)}"}


def openbmb_row(rng, i):
    def completion(rating):
        aspects = ("helpfulness", "honesty", "instruction_following", "truthfulness")
        return {"model": "m", "response": sentence(rng, 40), "overall_score": 5.0, "principle": "helpfulness",
                "custom_system_prompt": "", "critique": "",
                "annotations": {a: {"Rating": rating if a != "honesty" else "N/A", "Rationale": "r"} for a in aspects}}
    return {"source": "evol_instruct", "instruction": f"Question {i}: {sentence(rng, 12)}", "models": ["m"] * 4,
            "correct_answers": ["None"], "incorrect_answers": ["None"],
            "completions": [completion(str(r)) for r in (5, 2, 4, 1)]}


def tldr_row(rng, i):
    post = f"SUBREDDIT: r/test\n\nTITLE: Post {i // 2}\n\nPOST: {sentence(rng, 80)}\n\nTL;DR:"
    return {"prompt": post, "chosen": " " + sentence(rng, 15), "rejected": " " + sentence(rng, 10)}


SCHEMAS = {"custom": custom_row, "ultrafeedback_binarized": ultrafeedback_row, "hh_rlhf": hh_row,
           "openbmb": openbmb_row, "tldr": tldr_row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        # A private datasets cache, so "first" really builds and "second" really reads the cache.
        os.environ["HF_DATASETS_CACHE"] = str(Path(scratch) / "cache")
        from data_loader import convert_local_file

        results = {}
        for name, make_row in SCHEMAS.items():
            rng = random.Random(0)
            path = Path(scratch) / f"{name}.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for i in range(args.rows):
                    handle.write(json.dumps(make_row(rng, i)) + "\n")
            start = time.perf_counter()
            rows = convert_local_file(path)
            first = time.perf_counter() - start
            start = time.perf_counter()
            again = convert_local_file(path)
            second = time.perf_counter() - start
            assert len(again) == len(rows)
            results[name] = {"rows_in": args.rows, "prompts_out": len(rows), "first_load_seconds": round(first, 3),
                             "rows_per_second": round(args.rows / first), "cached_load_seconds": round(second, 3)}
            print(f"{name:24s} {args.rows / first:>10,.0f} rows/s  first {first:6.2f} s  cached {second:5.2f} s  "
                  f"({len(rows):,} prompts)", flush=True)
    report = {"benchmark": "data_prep", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "rows": args.rows, "schemas": results,
              "targets": {"custom_rows_per_second": 50_000, "cached_load_seconds": 2.0},
              "custom_meets_target": results["custom"]["rows_per_second"] >= 50_000,
              "cached_meets_target": all(r["cached_load_seconds"] < 2.0 for r in results.values())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
