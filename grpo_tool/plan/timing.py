"""`--plan`'s time estimate: seconds per optimizer step and per evaluation, from the FLOPs of sampling and training at
the device's throughput, each generated token bound by its arithmetic or by reading the weights, plus the framework's
own work. The memory side is memory.py's; fitting.py puts the two together in a plan.

    from grpo_tool.model_shapes import find_shape
    layers, head = token_flops(find_shape("tiny"), 0)    # forward FLOPs of one token: the blocks, the output layer
    assert layers > 0 and head == 2 * find_shape("tiny").vocab * find_shape("tiny").hidden
"""

from __future__ import annotations

from dataclasses import replace

from grpo_tool.model_shapes import ModelShape
from grpo_tool.plan.device import Device
from grpo_tool.plan.memory import prompt_rows, steps_per_generation
from grpo_tool.settings import GRPOConfig, resolved_eval_samples

# Per optimizer step, beside the FLOPs: TRL's and transformers' own work (sampling bookkeeping, metrics, the
# optimizer call), measured as the tiny model's whole step on the CPU (0.05 s, of which its FLOPs are 0.01 s).
STEP_OVERHEAD = 0.04
TRAIN_EFFICIENCY = 0.4  # share of peak matmul throughput a training step reaches (typical MFU of HF training)
CPU_TRAIN_EFFICIENCY = 0.8  # of the 512x512 matmul rate measured at plan time: SmolLM2-135M's steps reached 0.8
BANDWIDTH_EFFICIENCY = 0.7  # share of memory bandwidth a decode step reaches reading the weights
# Framework overhead per layer per generated token in transformers' generate (eager kernels, Python): on the CPU
# small beside reading the weights (SmolLM2-135M decodes at the copy bandwidth measured at plan time); on a GPU a
# typical launch-bound figure for eager decoding.
DECODE_OVERHEAD_PER_LAYER = {"cpu": 0.1e-3, "cuda": 0.15e-3}


def token_flops(shape: ModelShape, context: float) -> tuple[float, float]:
    """Forward FLOPs of one token: through the blocks, attending to `context` tokens, and through the output layer
    (which TRL runs on completion tokens only, logits_to_keep). The backward pass costs one more forward for the
    activations' gradients, two more when every weight trains."""
    mlp_share = shape.active_experts / shape.experts
    linear = sum(fan_in * fan_out * (mlp_share if name in ("gate_proj", "up_proj", "down_proj") else 1)
                 for name, (fan_in, fan_out) in shape.linear_shapes().items())
    attention = 4 * shape.attention_width * context  # scores and the weighted sum of values, per layer
    return 2 * shape.layers * linear + shape.layers * attention, 2 * shape.vocab * shape.hidden


def compute_rate(device: Device) -> float:
    """FLOPs per second the device reaches on this work."""
    return device.tflops * 1e12 * (CPU_TRAIN_EFFICIENCY if device.kind == "cpu" else TRAIN_EFFICIENCY)


def decode_overhead(config: GRPOConfig, shape: ModelShape, device: Device) -> float:
    """Seconds of framework work per generated token (none with vLLM)."""
    return 0 if config.use_vllm else DECODE_OVERHEAD_PER_LAYER[device.kind] * shape.layers


def sampling_seconds(config: GRPOConfig, shape: ModelShape, device: Device, rows: int, prompts: int,
                     prompt_tokens: int, weight_bytes: float) -> float:
    """Seconds to sample one batch of `rows` completions of max_completion_length tokens, `prompts` prompts
    prefilled (one per group where prompts are shared): the prefill, then each token's step, bound by its arithmetic
    or by reading the weights, plus the framework's work per token."""
    layers, head = token_flops(shape, 0)
    attention = token_flops(shape, (prompt_tokens + config.max_completion_length) / 2)[0] - layers
    rate = compute_rate(device)
    prefill = prompts * (prompt_tokens * (layers + attention) + head) / rate
    decode = max(rows * (layers + head) / rate, weight_bytes / (device.bandwidth * 1e12 * BANDWIDTH_EFFICIENCY))
    return prefill + config.max_completion_length * (decode + decode_overhead(config, shape, device))


def step_seconds(config: GRPOConfig, shape: ModelShape, device: Device, backend: str, prompt_tokens: int,
                 checkpointing: bool, weight_bytes: float) -> tuple[float, dict, str]:
    """Seconds per optimizer step from the FLOPs of generation and training at the device's throughput."""
    C, B, GA = config.max_completion_length, config.per_device_train_batch_size, config.gradient_accumulation_steps
    T = prompt_tokens + C
    layers, head = token_flops(shape, 0)
    attention = token_flops(shape, T / 2)[0] - layers  # causal: each token attends to half of T on average
    rate = compute_rate(device)
    passes = (2 if config.use_lora else 3) + (1 if checkpointing else 0) + (1 if config.beta > 0 else 0)
    tokens = prompt_rows(config, shape, backend, B, training=True, checkpointing=checkpointing) * prompt_tokens + B * C
    training = GA * (tokens * (layers + attention) + B * (C + 1) * head) * passes / rate
    batch = B * steps_per_generation(config)
    prompts = prompt_rows(config, shape, backend, batch, training=False)
    generation = (GA / steps_per_generation(config)) * sampling_seconds(config, shape, device, batch, prompts,
                                                                         prompt_tokens, weight_bytes)
    overhead = decode_overhead(config, shape, device)
    efficiency = CPU_TRAIN_EFFICIENCY if device.kind == "cpu" else TRAIN_EFFICIENCY
    note = (f"assumes every completion reaches {C} tokens; training at {100 * efficiency:.0f}% "
            f"of {device.tflops:.3g} TFLOPS ({device.how}), {passes} passes over {B * GA} x {T} tokens; each generated "
            f"token reads the weights at {100 * BANDWIDTH_EFFICIENCY:.0f}% of {device.bandwidth:.3g} TB/s"
            + (f" plus {overhead * 1000:.1f} ms of framework overhead" if overhead else "")
            + f", plus {STEP_OVERHEAD:g} s of per-step framework work; evaluations (below), checkpoints and reward "
            "functions not included")
    return training + generation + STEP_OVERHEAD, {"generation": round(generation, 3),
                                                    "training": round(training, 3), "other": STEP_OVERHEAD}, note


def evaluation_seconds(config: GRPOConfig, shape: ModelShape, device: Device, backend: str, prompt_tokens: int,
                       weight_bytes: float, processes: int = 1) -> float:
    """Seconds per evaluation, on step_seconds' assumptions: each process's share of the held-out prompts, K
    completions each, sampled in batches of per_device_eval_batch_size (a group's prompt computed once where prompts
    are shared), then each batch scored by three forward passes (TRL's evaluation loss, and the base-model measure's
    two)."""
    if config.max_eval_samples == 0:
        return 0.0
    samples = resolved_eval_samples(config)
    C, B = config.max_completion_length, config.per_device_eval_batch_size
    layers, head = token_flops(shape, 0)
    attention = token_flops(shape, (prompt_tokens + C) / 2)[0] - layers
    prompts = prompt_rows(replace(config, group_size=samples), shape, backend, B, training=False)
    sampling = sampling_seconds(config, shape, device, B, prompts, prompt_tokens, weight_bytes)
    scoring = 3 * (B * (prompt_tokens + C) * (layers + attention) + B * (C + 1) * head) / compute_rate(device)
    batches = -(-(-(-config.max_eval_samples // processes) * samples) // B)
    return batches * (sampling + scoring)
