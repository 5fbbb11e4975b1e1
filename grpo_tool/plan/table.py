"""What `--plan` shows: the table of parts, the plan.json a script reads, and the task that writes it.

    from grpo_tool.settings import GRPOConfig
    plan = make_plan(GRPOConfig(model_name="tiny", dataset_name="sample"), Device.gpu(24), prompt=(80, "given"))
    assert "peak" in format_plan(plan) and plan_record(plan)["fits"]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from grpo_tool.errors import UserError
from grpo_tool.json_files import write_json_atomic
from grpo_tool.launch import ONE_DEVICE, Sharding
from grpo_tool.outputs import PLAN_FILE
from grpo_tool.plan.device import GB, MB, Device
from grpo_tool.plan.fitting import Plan, make_plan
from grpo_tool.plan.prompts import longest_prompt
from grpo_tool.plan.sharding import describe
from grpo_tool.settings import GRPOConfig, resolved_eval_samples


def format_plan(plan: Plan) -> str:
    config, shape, device = plan.config, plan.shape, plan.device
    unit, scale, digits = ("MB", MB, 0) if plan.peak < 4 * GB else ("GB", GB, 2)
    lines = [f"plan: {config.model_name} ({shape.parameters / 1e9:.2f}B parameters; shape from {shape.source})",
             f"  on {device.name} with {device.memory / GB:.1f} GB, {plan.backend} backend, "
             f"{'LoRA r=' + str(config.lora_r) if config.use_lora else 'full fine-tuning'}, gradient checkpointing "
             f"{'on' if plan.checkpointing else 'off'}",
             *([f"  {describe(plan.sharding)}"] if plan.sharding.processes > 1 or plan.sharding.engine != "none"
               else []),
             f"  {config.per_device_train_batch_size} completions per micro-batch (group {config.group_size}), "
             f"prompts up to {plan.prompt_tokens} tokens ({plan.prompt_source}), completions up to "
             f"{config.max_completion_length}", "",
             f"  {'part':<17}{unit:>8}  {'when':<11} what"]
    for part in plan.parts:
        lines.append(f"  {part.name:<17}{part.bytes / scale:>8.{digits}f}  {part.phase:<11} {part.note}")
    verdict = "fits" if plan.fits else "does NOT fit"
    lines += [f"  {'peak':<17}{plan.peak / scale:>8.{digits}f}  what stays plus the largest phase: {verdict} in "
              f"{device.memory / GB:.1f} GB", ""]
    lines += [f"  would fit: {idea}" for idea in plan.would_fit]
    seconds = plan.seconds_per_step
    lines.append(f"  time: about {seconds:.2f}" if seconds < 1 else f"  time: about {seconds:.1f}")
    lines[-1] += f" s per step ({plan.time_note})"
    if evaluation := plan.seconds_per_evaluation:
        config = plan.config
        evaluations = config.max_steps // config.eval_steps if config.max_steps > 0 else None
        lines.append(f"  evaluation: about {evaluation:.2f}" if evaluation < 1 else f"  evaluation: about "
                     f"{evaluation:.1f}")
        lines[-1] += (f" s each ({config.max_eval_samples} held-out prompts x {resolved_eval_samples(config)} "
                      "samples, scored)"
                      + (f", {evaluations} in the run" if evaluations else f", one every {config.eval_steps} steps"))
    return "\n".join(lines)


def plan_record(plan: Plan) -> dict:
    """plan.json: figures in GiB (bytes beside them), so a script can read `peak` and `fits` directly."""
    return {
        "model": plan.config.model_name, "shape": {**plan.shape.__dict__, "parameters": plan.shape.parameters},
        "device": {**plan.device.__dict__, "memory_gib": round(plan.device.memory / GB, 3)},
        "backend": plan.backend, "gradient_checkpointing": plan.checkpointing,
        "sharding": {**plan.sharding.__dict__, "per_device": True},
        "prompt_tokens": plan.prompt_tokens, "prompt_source": plan.prompt_source,
        "completion_tokens": plan.config.max_completion_length,
        "parts": [{"name": part.name, "gib": round(part.bytes / GB, 4), "bytes": int(part.bytes),
                   "phase": part.phase, "note": part.note} for part in plan.parts],
        "peak": round(plan.peak / GB, 4), "peak_bytes": int(plan.peak),
        # What torch.cuda.max_memory_allocated can see: the peak less the runtime (CUDA context, libraries).
        "allocated": round((plan.peak - plan.runtime) / GB, 4),
        "memory": round(plan.device.memory / GB, 4), "fits": plan.fits, "would_fit": plan.would_fit,
        "seconds_per_step": round(plan.seconds_per_step, 3), "seconds_by_phase": plan.seconds_by_phase,
        "seconds_per_evaluation": round(plan.seconds_per_evaluation, 3),
        "time_note": plan.time_note,
        "units": "GiB unless a key says bytes or seconds",
    }


def run_plan(config: GRPOConfig, gpu_memory_gb: float | None, training_prompts: Callable[[], list],
             sharding: Sharding = ONE_DEVICE) -> str:
    """--plan: the table, and plan.json in the output dir (the only file written). training_prompts reads the
    prompts whose longest is planned for (see grpo_tool/plan/prompts.py); `sharding` is the engine and the number of
    processes, the table being for one device of them."""
    device = Device.detect(gpu_memory_gb)
    if device.kind == "cpu" and sharding.engine == "fsdp":
        # accelerate turns FSDP on for GPU processes only: on a CPU an FSDP launch trains as plain DDP.
        sharding = replace(sharding, engine="none",
                           source=f"{sharding.source}; FSDP runs on GPUs only, so on a CPU it is DDP")
    if device.kind == "cpu" and sharding.processes > 1:  # a CPU's processes run on this one machine and share it
        device = replace(device, memory=device.memory / sharding.processes,
                         name=f"{device.name}, a 1/{sharding.processes} share for each process")
    plan = make_plan(config, device, prompt=longest_prompt(config, training_prompts), sharding=sharding)
    path = Path(config.output_dir) / PLAN_FILE
    try:
        write_json_atomic(path, plan_record(plan))
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    return format_plan(plan) + f"\n  written: {path}"
