"""The reward-hacking alarm on real runs: a reward SmolLM2-135M-Instruct games, one it satisfies fluently, and the
tiny quick test, each through train_grpo.py as a user runs it.

Hacked: 40 steps of LoRA (lr 5e-4, group 4) on `short_plain_words` (bench/hacking_rewards.py), which the model
raises fastest with a word or two of nonsense. Healthy: the same on `detailed_answer`, which it meets with fluent
longer answers. For each run: the training reward and completion length at each log, the base-model measure
(eval_base_nll, eval_base_drift) at each evaluation, the alarms raised (alarms.json), a few answers of the first and
last generation logs, and the measure's cost. The hacked run must raise `reward_hacking`; the others must not.

    python bench/reward_hacking.py [--only hacked]

Writes bench/results/reward_hacking.json. Run it alone (about 12 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "reward_hacking.json"


def real_run(reward: str, model: str, rules_off: str) -> list[str]:
    return ["--model", model, "--dataset", "sample", "--max-samples", "200", "--max-steps", "40", "--batch-size", "8",
            "--gradient-accumulation-steps", "1", "--group-size", "4", "--max-completion-length", "48",
            "--learning-rate", "5e-4", "--logging-steps", "5", "--eval-steps", "10", "--save-steps", "40",
            "--max-eval-samples", "8", "--per-device-eval-batch-size", "8", "--max-generation-samples", "4",
            "--reward-config", rules_off, "--reward-fn", f"bench/hacking_rewards.py:{reward}"]


def summarise(output_dir: Path, seconds: float) -> dict:
    history = json.loads((output_dir / "final_model" / "trainer_state.json").read_text())["log_history"]
    train = [{"step": e["step"], "reward": round(e["reward"], 3), "length": round(e["completions/mean_length"], 1)}
             for e in history if "reward" in e and "eval_reward" not in e]
    evaluations = [{"step": e["step"], "eval_reward": round(e["eval_reward"], 3),
                    "base_nll": e.get("eval_base_nll") and round(e["eval_base_nll"], 3),
                    "base_drift": e.get("eval_base_drift") and round(e["eval_base_drift"], 3),
                    "seconds": round(e["eval_runtime"], 2)} for e in history if "eval_reward" in e]
    alarms_file = output_dir / "alarms.json"
    alarms = json.loads(alarms_file.read_text()) if alarms_file.is_file() else []
    logs = sorted((output_dir / "generation_logs").glob("generation_log_step_*.json"),
                  key=lambda path: int(path.stem.rsplit("_", 1)[1]))
    answers = {}
    for path in (logs[0], logs[-1]) if logs else ():
        answers[path.stem] = [{"prompt": entry["prompt"][-60:], "answer": entry["full_response"][:120],
                               "base_nll": entry.get("base_nll"), "base_drift": entry.get("base_drift")}
                              for entry in json.loads(path.read_text())]
    return {"train": train, "evaluations": evaluations, "alarms": alarms, "answers": answers,
            "seconds": round(seconds, 1)}


def run(name: str, flags: list[str], work: Path) -> dict:
    output_dir = work / name
    start = time.monotonic()
    process = subprocess.run([sys.executable, "train_grpo.py", *flags, "--output-dir", str(output_dir)],
                             capture_output=True, text=True, cwd=ROOT)
    if process.returncode:
        sys.exit(f"{name} failed:\n{process.stderr[-3000:]}")
    result = summarise(output_dir, time.monotonic() - start)
    ids = [alarm["id"] for alarm in result["alarms"]]
    print(f"{name}: reward {result['train'][0]['reward']} -> {result['train'][-1]['reward']}, length "
          f"{result['train'][0]['length']} -> {result['train'][-1]['length']}; base NLL / drift by evaluation "
          f"{[(e['step'], e['base_nll'], e['base_drift']) for e in result['evaluations']]}; alarms {ids}", flush=True)
    return result


def measure_cost(model_file: str) -> dict:
    """Seconds the base-model measure adds to an evaluation of the hacked run's size: 32 completions of 48 tokens
    after 80-token prompts, SmolLM2 with a LoRA adapter (one pass with it, one with it switched off)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from grpo_tool.base_view import BaseView, completion_logps
    from grpo_tool.gguf_models import converted_gguf

    model = AutoModelForCausalLM.from_pretrained(converted_gguf(Path(model_file)), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    ids = torch.randint(0, 49000, (32, 128))
    mask = torch.ones_like(ids)
    completion_logps(model, BaseView(adapter=True), ids[:8], mask[:8], 48)  # warm-up
    start = time.perf_counter()
    completion_logps(model, BaseView(adapter=True), ids, mask, 48)
    return {"completions": 32, "completion_tokens": 48, "prompt_tokens": 80,
            "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the runs whose name contains this")
    args = parser.parse_args()
    from grpo_tool.example_models import smollm2_gguf

    model = str(smollm2_gguf())
    with tempfile.TemporaryDirectory() as work:
        rules_off = Path(work) / "rules_off.json"
        rules_off.write_text(json.dumps({"accuracy_weight": 0, "length_weight": 0, "quality_weight": 0}))
        runs = {"hacked": real_run("short_plain_words", model, str(rules_off)),
                "healthy": real_run("detailed_answer", model, str(rules_off)), "tiny quick test": ["--quick-test"]}
        results = {name: run(name, flags, Path(work)) for name, flags in runs.items()
                   if not args.only or args.only in name}
    cost = measure_cost(model)
    print(f"the measure's cost: {cost['seconds']} s for {cost['completions']} completions", flush=True)
    expected = {"hacked": True, "healthy": False, "tiny quick test": False}
    report = {"benchmark": "reward_hacking", "date": time.strftime("%Y-%m-%d"), "runs": results, "cost": cost,
              "as_expected": all(("reward_hacking" in [a["id"] for a in result["alarms"]]) == expected[name]
                                 for name, result in results.items())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"as expected: {report['as_expected']} -> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
