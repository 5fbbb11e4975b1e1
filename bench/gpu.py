"""The GPU check: the same GRPO work through Unsloth (4-bit + LoRA) and through transformers + peft + bitsandbytes, on
random-weight models of the presets' families (Llama 3.1, Qwen 2.5, Gemma 2), every run through the real command line
(`train_grpo.main`), each in a process of its own (Unsloth patches transformers and TRL for a whole process).

What each run records: its exit status and last error line, seconds per step, completion tokens per second, peak GPU
memory allocated while training beside the plan's prediction (`--plan`'s `allocated`), the TRL options the trainer
received (from the run record; the two backends must agree on every option that decides the optimisation), evaluations
with the base-model measure, generation logs, checkpoints; then the merged model reloaded by plain transformers in a
fresh process, and a resume from the first checkpoint to the same last step. Also: a reward model of the policy's
family on Unsloth, the merge of a pre-quantised 4-bit base on both backends, full fine-tuning's updates (float32
master weights must move at the default learning rate), and a run with the calculator tool on each backend (TRL's
tool loop through Unsloth's generated trainer: it must train, with a finite loss and the tool metrics logged).

On the GPU machine (no network; what it lacks comes in .gpu_carry/, built by bench/gpu_carry.sh):

    python bench/gpu.py --carry .gpu_carry --budget 480 --out $OUT/gpu.json

On a CPU, what can run there (the transformers backend, full precision, no 4-bit):

    python bench/gpu.py --cpu

Runs go in priority order; one that would start past --budget seconds is skipped and listed as such. Writes
bench/results/gpu.json (or --out) after every run, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grpo_tool.outputs import read_json  # noqa: E402 - after the path it needs

RESULTS = ROOT / "bench" / "results" / "gpu.json"
MARK = "RESULT "
# Small shapes of the presets' families: big enough for Unsloth's kernels (head_dim 64), small enough to build,
# train, merge and reload in seconds.
FAMILIES = {
    "llama": ("LlamaConfig", {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 4,
                              "num_attention_heads": 8, "num_key_value_heads": 4, "rope_theta": 500000.0}),
    "qwen2": ("Qwen2Config", {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 4,
                              "num_attention_heads": 8, "num_key_value_heads": 4}),
    "gemma2": ("Gemma2Config", {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 4,
                                "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64}),
}
# The work of every run: the bundled sample prompts, 4 steps of 8 completions in groups of 4, evaluations and
# checkpoints at 2 and 4, the merged export.
WORK = ["--dataset", "sample", "--max-samples", "64", "--max-eval-samples", "8", "--max-steps", "4",
        "--eval-steps", "2", "--save-steps", "2", "--logging-steps", "1", "--group-size", "4", "--batch-size", "8",
        "--per-device-eval-batch-size", "8", "--gradient-accumulation-steps", "1", "--max-completion-length", "32",
        "--max-seq-length", "512", "--max-generation-samples", "2", "--learning-rate", "1e-3", "--no-wandb"]
# Options that decide the optimisation: the same on both backends, or the run means something else on a GPU.
OPTIMISATION = ("optim", "weight_decay", "warmup_steps", "learning_rate", "lr_scheduler_type", "loss_type", "beta",
                "epsilon", "epsilon_high", "mask_truncated_completions", "scale_rewards", "num_generations",
                "temperature", "vllm_importance_sampling_correction", "gradient_accumulation_steps", "seed")
ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}


def runs(cpu: bool) -> list[dict]:
    """Every run, most telling first."""
    backends = ["transformers"] if cpu else ["unsloth", "transformers"]
    planned = []
    for family in ("llama", "qwen2", "gemma2"):
        for backend in backends:
            extra = ["--reward-model", "tiny"] if backend == "unsloth" and family == "llama" else []
            planned.append({"name": f"{backend}-{family}", "kind": "train", "backend": backend, "model": family,
                            "args": ["--lora", "--save-merged", *extra]})
            if family == "llama":
                planned.append({"name": f"{backend}-{family}-resume", "kind": "resume", "backend": backend,
                                "model": family, "of": f"{backend}-{family}"})
    for backend in backends:  # tools through each backend's trainer (Unsloth 2026.10.7 keeps TRL's tool loop and
        # reads its tool_mask in its own loss: read in its source; this run is the check on a GPU)
        planned.append({"name": f"{backend}-qwen2-tools", "kind": "train", "backend": backend, "model": "qwen2",
                        "args": ["--lora", "--tools", "calculator", "--max-steps", "2", "--max-completion-length",
                                 "64"]})
    if not cpu:
        for backend in backends:  # the merge of a pre-quantised base: dequantised, never re-quantised
            planned.append({"name": f"{backend}-llama-bnb-4bit", "kind": "train", "backend": backend,
                            "model": "llama-bnb-4bit", "args": ["--lora", "--save-merged", "--max-steps", "2"]})
    planned.append({"name": "transformers-llama-full", "kind": "train", "backend": "transformers", "model": "llama",
                    "args": ["--no-lora", "--learning-rate", "5e-6", "--max-steps", "2", "--save-steps", "2",
                             "--eval-steps", "2"], "moved": True})
    planned.append({"name": "reload-merged", "kind": "reload"})
    return planned


# in the child processes

def emit(data: dict) -> None:
    print(MARK + json.dumps(data, default=str), flush=True)


def build(work: Path, cpu: bool) -> dict:
    """Random-weight models of each family with the tiny model's tokenizer, 16-bit, and a pre-quantised copy."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_tool.tiny_model import ensure_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    built = {}
    for family, (class_name, shape) in FAMILIES.items():
        config = getattr(transformers, class_name)(
            vocab_size=len(tokenizer), max_position_embeddings=1024, tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **shape)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).to(torch.float32 if cpu else torch.bfloat16)
        model.save_pretrained(work / family)
        tokenizer.save_pretrained(work / family)
        built[family] = sum(p.numel() for p in model.parameters())
    if not cpu:
        from transformers import BitsAndBytesConfig

        quantised = AutoModelForCausalLM.from_pretrained(
            work / "llama", device_map={"": 0}, dtype=torch.bfloat16, quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16))
        quantised.save_pretrained(work / "llama-bnb-4bit")
        tokenizer.save_pretrained(work / "llama-bnb-4bit")
        built["llama-bnb-4bit"] = built["llama"]
    return {"parameters": built}


def cli(argv: list[str]) -> tuple[int, str]:
    """train_grpo.main as the command line runs it: (exit status, the last line it printed to stderr)."""
    import contextlib
    import io

    from train_grpo import main

    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        code = main(argv)
    lines = errors.getvalue().strip().splitlines()
    sys.stderr.write(errors.getvalue()[-4000:])
    return code, (lines[-1] if lines else "")


def train(run: dict, work: Path, runs_dir: Path, cpu: bool) -> dict:
    import torch

    from grpo_trainer import GRPOTrainer

    output_dir = runs_dir / run["name"]
    argv = ["--model", str(work / run["model"]), "--backend", run["backend"], *WORK, *run["args"],
            "--output-dir", str(output_dir)]
    plan_code, plan_error = cli(["--plan", *argv[:-1], str(runs_dir / f"{run['name']}-plan")])
    plan = read_json(runs_dir / f"{run['name']}-plan" / "plan.json", {})
    peak = {}
    if not cpu:
        saving = GRPOTrainer.save_model

        def save_model(self, *args, **kwargs):  # the training peak, before the merged export loads its own copy
            peak.setdefault("allocated", torch.cuda.max_memory_allocated() / 2**30)
            return saving(self, *args, **kwargs)

        GRPOTrainer.save_model = save_model
    start = time.perf_counter()
    code, error = cli(argv)
    facts = {"exit": code, "error": error if code else None, "seconds": round(time.perf_counter() - start, 1),
             "plan_exit": plan_code, "plan_error": plan_error if plan_code else None,
             "plan_allocated_gib": plan.get("allocated"), "plan_peak_gib": plan.get("peak"),
             "peak_allocated_gib": round(peak["allocated"], 3) if "allocated" in peak else None,
             **run_facts(output_dir)}
    if facts["peak_allocated_gib"] and facts["plan_allocated_gib"]:
        facts["plan_over_measured"] = round(facts["plan_allocated_gib"] / facts["peak_allocated_gib"], 3)
    if run.get("moved"):
        facts["weights_moved"] = moved_share(work / run["model"], output_dir / "final_model")
    return facts


def resume(run: dict, work: Path, runs_dir: Path) -> dict:
    """The trained run's first checkpoint, copied into a dir of its own (the trained run keeps its merged model for
    the reload), resumed to the same last step."""
    import shutil

    trained = runs_dir / run["of"]
    first = sorted(trained.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    if not first:
        return {"exit": None, "error": f"no checkpoint in {trained}: its run did not get that far"}
    output_dir = runs_dir / run["name"]
    shutil.copytree(first[0], output_dir / first[0].name, dirs_exist_ok=True)
    code, error = cli(["--model", str(work / run["model"]), "--backend", run["backend"], *WORK, "--lora",
                       "--resume-from-checkpoint", str(output_dir / first[0].name), "--output-dir", str(output_dir)])
    state = read_json(output_dir / "final_model" / "trainer_state.json", {})
    steps = [entry["step"] for entry in state.get("log_history", [])
             if "reward" in entry and "eval_reward" not in entry]
    last_step = read_json(trained / "final_model" / "trainer_state.json", {}).get("global_step")
    return {"exit": code, "error": error if code else None, "resumed_from": first[0].name,
            "global_step": state.get("global_step"), "steps_trained": steps,
            "same_last_step": state.get("global_step") == last_step}


def reload_merged(runs_dir: Path) -> dict:
    """Every merged model, loaded by plain transformers in a process without Unsloth, and asked for a few tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = {}
    for merged in sorted(runs_dir.glob("*/final_model/merged")):
        name = merged.parent.parent.name
        try:
            config = read_json(merged / "config.json", {})
            model = AutoModelForCausalLM.from_pretrained(merged, device_map="auto" if torch.cuda.is_available()
                                                         else None)
            tokenizer = AutoTokenizer.from_pretrained(merged)
            encoded = tokenizer("What is 2 + 2?", return_tensors="pt").to(model.device)
            output = model.generate(**encoded, max_new_tokens=8, do_sample=False)
            reloaded[name] = {"loads": True, "dtype": str(next(model.parameters()).dtype),
                              "quantization_config": "quantization_config" in config,
                              "generated_tokens": output.shape[1] - encoded["input_ids"].shape[1]}
        except Exception as error:  # noqa: BLE001 - what failed is the finding
            reloaded[name] = {"loads": False, "error": f"{type(error).__name__}: {str(error)[:300]}"}
    return {"merged": reloaded}


def run_facts(output_dir: Path) -> dict:
    """What a finished run left: speed, the options TRL received, evaluations, logs, checkpoints, merged export."""
    state = read_json(output_dir / "final_model" / "trainer_state.json", {})
    history = state.get("log_history", [])
    steps = [entry for entry in history if "reward" in entry and "eval_reward" not in entry]
    runtime = next((entry["train_runtime"] for entry in history if "train_runtime" in entry), None)
    record = read_json(output_dir / "run_record.json", {})
    log_file = output_dir / "grpo_training.log"
    log = log_file.read_text(errors="replace") if log_file.is_file() else ""
    tokens = sum(entry.get("completions/mean_length", 0) * 8 for entry in steps)
    return {
        "steps": state.get("global_step"), "train_runtime": runtime,
        "seconds_per_step": round(runtime / len(steps), 3) if runtime and steps else None,
        "completion_tokens_per_second": round(tokens / runtime, 1) if runtime else None,
        "backend_line": next((line.split(": ", 2)[-1] for line in log.splitlines() if " backend: " in line), None),
        "trl_arguments": {key: (record.get("trl_arguments") or {}).get(key) for key in OPTIMISATION},
        "precision": {key: (record.get("trl_arguments") or {}).get(key) for key in ("bf16", "fp16")},
        "shared_prompts": (record.get("shared_prompts") or {}).get("said"),  # on, or off and why, on this GPU
        "evaluations": sum("eval_reward" in entry for entry in history),
        "base_measure": any("eval_base_drift" in entry for entry in history),
        "reward_model_scored": any("rewards/reward_model/mean" in entry for entry in history),
        "kept_fp32": next((line.split(": ", 2)[-1] for line in log.splitlines()
                           if "kept " in line and "float32" in line), None),
        "generation_logs": len(list((output_dir / "generation_logs").glob("*.json"))),
        "checkpoints": sorted(path.name for path in output_dir.glob("checkpoint-*")),
        "merged_saved": (output_dir / "final_model" / "merged" / "config.json").is_file(),
        "errors_logged": [line.split(": ", 2)[-1][:300] for line in log.splitlines() if " ERROR " in line][:3],
        "tools": {key: next((entry[key] for entry in steps if key in entry), None)
                  for key in ("tools/call_frequency", "tools/failure_frequency", "loss")} if record.get("tools")
        else None,
    }


def moved_share(start: Path, final: Path) -> float | None:
    """The share of weight elements that changed from the start to the final model."""
    from safetensors.torch import load_file

    try:
        before = {k: v for shard in start.glob("*.safetensors") for k, v in load_file(shard).items()}
        after = {k: v for shard in final.glob("*.safetensors") for k, v in load_file(shard).items()}
    except OSError:
        return None
    changed = total = 0
    for name, value in before.items():
        if name in after and after[name].shape == value.shape:
            changed += int((after[name].float() != value.float()).sum())
            total += value.numel()
    return round(changed / total, 4) if total else None


def child(kind: str, run: dict, work: Path, runs_dir: Path, cpu: bool) -> None:
    if kind == "build":
        emit(build(work, cpu))
    elif kind == "train":
        emit(train(run, work, runs_dir, cpu))
    elif kind == "resume":
        emit(resume(run, work, runs_dir))
    else:
        emit(reload_merged(runs_dir))


# in the parent

def unpack_carry(carry: Path, target: Path) -> str:
    """The carried packages (bench/gpu_carry.sh), unpacked once; returns the folder for PYTHONPATH."""
    site = target / "site"
    if not site.is_dir():
        with tarfile.open(carry / "site.tgz") as archive:
            archive.extractall(target, filter="data")
    return str(site)


def launch(kind: str, run: dict, work: Path, runs_dir: Path, cpu: bool, environment: dict, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--run", json.dumps(run), "--work", str(work), "--runs",
               str(runs_dir)] + (["--cpu"] if cpu else [])
    start = time.perf_counter()
    try:
        process = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment,
                                 timeout=max(10.0, timeout))
    except subprocess.TimeoutExpired as expired:
        tail = (expired.stderr or b"")[-1500:]
        return {"outcome": "timed out", "seconds": round(time.perf_counter() - start, 1),
                "stderr_tail": tail.decode(errors="replace") if isinstance(tail, bytes) else tail}
    lines = [line for line in process.stdout.splitlines() if line.startswith(MARK)]
    measured = json.loads(lines[-1][len(MARK):]) if lines else {}
    measured.update({"process_exit": process.returncode, "process_seconds": round(time.perf_counter() - start, 1)})
    if process.returncode or not lines:
        measured["stderr_tail"] = process.stderr[-2500:]
    return measured


def machine_facts() -> dict:
    facts = {"machine": platform.machine(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        facts["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                       "--format=csv,noheader"], capture_output=True, text=True,
                                      timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        facts["gpu"] = None
    return facts


def compare_backends(results: dict) -> dict:
    """For each family trained on both backends: the options that decide the optimisation, and where they differ."""
    compared = {}
    for family in FAMILIES:
        unsloth, transformers = results.get(f"unsloth-{family}", {}), results.get(f"transformers-{family}", {})
        if unsloth.get("trl_arguments") and transformers.get("trl_arguments"):
            differ = {key: [unsloth["trl_arguments"][key], transformers["trl_arguments"][key]] for key in OPTIMISATION
                      if unsloth["trl_arguments"][key] != transformers["trl_arguments"][key]}
            compared[family] = {"same_optimisation": not differ, "differences (unsloth, transformers)": differ}
    return compared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the transformers backend only, full precision")
    parser.add_argument("--budget", type=float, default=480, help="seconds; no run starts after this")
    parser.add_argument("--carry", help="the folder bench/gpu_carry.sh built (the GPU machine lacks its packages)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--scratch", default="/tmp/grpo-gpu-check")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--run", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--runs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, json.loads(args.run), Path(args.work), Path(args.runs), args.cpu)
        return
    started = time.perf_counter()
    scratch = Path(args.scratch)
    work, runs_dir = scratch / "models", scratch / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)  # an earlier check's runs: each output dir holds one run
    work.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **ENVIRONMENT, "GRPO_TINY_MODEL_DIR": str(scratch / "tiny"),
                   "UNSLOTH_COMPILE_LOCATION": str(scratch / "unsloth_compiled_cache")}
    paths = [str(ROOT)] + ([unpack_carry(Path(args.carry), scratch)] if args.carry else [])
    environment["PYTHONPATH"] = os.pathsep.join(paths + [environment.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    report = {"benchmark": "gpu", "date": time.strftime("%Y-%m-%d"), "cpu_only": args.cpu, **machine_facts(),
              "work": WORK, "runs": {}, "skipped": []}
    out = Path(args.out)

    def write() -> None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        report["backends_compared"] = compare_backends(report["runs"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    report["build"] = launch("build", {}, work, runs_dir, args.cpu, environment, args.budget)
    print(f"build: {report['build']}", flush=True)
    for run in runs(args.cpu):
        left = args.budget - (time.perf_counter() - started)
        if left < 20:
            report["skipped"].append(run["name"])
            continue
        report["runs"][run["name"]] = measured = launch(run["kind"], run, work, runs_dir, args.cpu, environment, left)
        print(f"{run['name']}: " + ", ".join(f"{key} {measured.get(key)}" for key in (
            "exit", "error", "seconds_per_step", "peak_allocated_gib", "plan_allocated_gib", "global_step",
            "weights_moved", "merged", "outcome") if measured.get(key) is not None), flush=True)
        write()
    write()
    print(f"-> {out} ({report['seconds']} s; skipped: {', '.join(report['skipped']) or 'none'})")


if __name__ == "__main__":
    main()
