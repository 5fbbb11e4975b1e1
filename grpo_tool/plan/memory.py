"""`--plan`'s memory arithmetic: one device's memory by part and its peak, counted from the model's shape and the
run's settings before any weight loads (timing.py estimates the seconds, fitting.py puts the two in a plan).

What is counted, per device, in bytes (B: completions per micro-batch, T: prompt + completion tokens, L: layers,
h: hidden width, I: MLP width, V: vocabulary):
- weights: fp32 on the CPU; on a GPU 16-bit, or 4-bit (NF4 with its block scales, about 4.5 bits a weight) for the
  blocks' linear layers while embeddings and norms stay 16-bit;
- LoRA weights, their gradients and AdamW's two moments, all fp32 (full fine-tuning: every weight, in its dtype);
- activations kept for the backward pass: per token and layer the residual stream and norm outputs (6h), queries,
  keys and values widened to all heads plus the attention output (4 x heads x head_dim) and the MLP's four I-wide
  tensors; with gradient checkpointing only each layer's input plus one layer's set (Unsloth's checkpointing moves
  even the layer inputs to CPU memory);
- the log-probability pass's logits, B x (completion + 1) x V: the model's output, the copy divided by the
  temperature and the gradient on the CPU and in transformers (fp32 on the CPU); the output and its gradient in
  16-bit with TRL's fused kernel on a GPU; one completion at a time in fp32 under Unsloth, whose loss is chunked;
- generation's KV cache, B x steps_per_generation completions of T tokens, plus one layer's prefill;
- where prompts are shared (grpo_tool/shared_prompts.py), a group's prompt tokens once in the prefill and in the
  training pass's activations, plus its keys and values indexed out to each row of the group;
- the reference model (a second copy of the weights) when beta > 0 without LoRA; with LoRA the reference is the base
  with the adapter off and costs no memory; full fine-tuning with beta 0 keeps a frozen copy of the starting weights
  (up to 1B parameters) for the base-model measure (grpo_tool/base_view.py);
- vLLM colocated: the share of the GPU it is given, holding its own weights and KV cache;
- runtime: on the CPU the process with torch, transformers, TRL, datasets and peft imported (513 MB measured here)
  and the data; on a GPU the CUDA context and library workspaces, which torch.cuda.max_memory_allocated does not see.
Training, generation and evaluation take turns, so the peak is what stays plus the largest of the three.

    from config import build_config
    from grpo_tool.model_shapes import find_shape
    parts = count_parts(build_config(mode="quick_test"), find_shape("tiny"), Device.gpu(24), "unsloth", 80, False)
    assert round(peak_of(parts) / GB, 1) == 0.7 and parts[0].name == "weights"    # the tiny quick test on a 24 GB GPU
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from grpo_tool.backend import BASE_COPY_MAX_PARAMETERS, checkpointing_by_default
from grpo_tool.errors import UserError
from grpo_tool.launch import ONE_DEVICE, Sharding
from grpo_tool.model_shapes import LINEAR_LAYERS, ModelShape, find_shape
from grpo_tool.plan.device import GB, MB, Device
from grpo_tool.plan.sharding import ModelFacts, gathers_for_generation, shard_parts
from grpo_tool.settings import PARTITION_FREE_LOSSES, SHARE_PROMPTS_MIN_PARAMETERS, GRPOConfig
from grpo_tool.trl_options import optimizer_name

NF4_BYTES = 4.5 / 8  # 4-bit weights plus one fp32 absmax per 64 (double-quantised: less; counted plainly)
CPU_RUNTIME = 560 * MB  # 513 MB measured after importing torch/transformers/trl/datasets/peft, plus data & tokenizer
# On the CPU, glibc's malloc keeps most blocks a forward pass frees (each layer's temporaries: the LoRA layers' base
# and adapter outputs, the attention's reshapes) instead of returning them, and under checkpointing the recomputed
# layers free theirs again. Resident memory over a step therefore exceeds the live tensors by about 0.6x the full
# activations of every layer, with or without checkpointing: measured on SmolLM2-135M with LoRA, 8 x 141 tokens,
# 0.70 without and 0.49 with checkpointing (live tensors seen with MALLOC_MMAP_THRESHOLD_ fixed, which stops it).
CPU_RETAINED_SHARE = 0.6
CUDA_RUNTIME = 700 * MB  # CUDA context (about 500 MB on an H100) and cuBLAS/cuDNN workspaces


@dataclass(frozen=True)
class Part:
    name: str
    bytes: float
    phase: str  # always, training, generation or evaluation: phases take turns
    note: str


def lora_parameters(shape: ModelShape, config: GRPOConfig) -> int:
    """LoRA's A and B matrices over the targeted linear layers of every block."""
    wanted = LINEAR_LAYERS if config.lora_target_modules == "all-linear" else tuple(
        name.strip() for name in config.lora_target_modules.split(","))
    unknown = [name for name in wanted if name not in LINEAR_LAYERS]
    if unknown:
        raise UserError(f"--lora-target-modules {config.lora_target_modules}: the plan counts the linear layers of "
                        f"Llama-style blocks ({', '.join(LINEAR_LAYERS)}) and does not know {', '.join(unknown)}; "
                        "plan with those names or all-linear")
    total = 0
    for name, (fan_in, fan_out) in shape.linear_shapes().items():
        if name in wanted:
            experts = shape.experts if name in ("gate_proj", "up_proj", "down_proj") else 1
            total += config.lora_r * (fan_in + fan_out) * experts
    return total * shape.layers


def checkpointing_on(config: GRPOConfig, shape: ModelShape, device: Device) -> bool:
    """As the run decides it: the setting, or unset, backend.checkpointing_by_default."""
    if config.gradient_checkpointing is not None:
        return config.gradient_checkpointing
    return checkpointing_by_default(device.kind == "cuda", shape.parameters)


def steps_per_generation(config: GRPOConfig) -> int:
    """Micro-batches sampled per generation (TRL: gradient_accumulation_steps unless trl_options say otherwise)."""
    options = config.trl_options
    for key in ("steps_per_generation", "generation_batch_size"):
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"trl_options {key}={value!r}: TRL takes a whole number of at least 1")
        return value if key == "steps_per_generation" else max(1, value // config.per_device_train_batch_size)
    return config.gradient_accumulation_steps


def prompt_rows(config: GRPOConfig, shape: ModelShape, backend: str, rows: int, training: bool,
                checkpointing: bool = False) -> int:
    """Of `rows` completions, how many prompts the model computes: one per group where the run shares prompts
    (grpo_tool/shared_prompts.py: on the transformers backend unless share_prompts is false, or unset on a model
    under SHARE_PROMPTS_MIN_PARAMETERS; in the training pass not under gradient checkpointing, and with whole groups
    in a micro-batch for PARTITION_FREE_LOSSES; in sampling not with vLLM), else one per completion."""
    off = config.share_prompts is False or backend == "unsloth" or \
        (config.share_prompts is None and shape.parameters < SHARE_PROMPTS_MIN_PARAMETERS) or \
        (checkpointing or config.loss_type not in PARTITION_FREE_LOSSES if training else config.use_vllm)
    return rows if off else max(1, -(-rows // config.group_size))


def count_parts(config: GRPOConfig, shape: ModelShape, device: Device, backend: str, prompt_tokens: int,
                checkpointing: bool, sharding: Sharding = ONE_DEVICE) -> list[Part]:
    """Every part of one device's memory, in the table's order (the module docstring says what each counts; what
    a sharding engine divides and gathers is in grpo_tool/plan/sharding.py)."""
    cpu = device.kind == "cpu"
    if sharding.engine == "zero3":  # the run does not share prompts there (grpo_tool/shared_prompts.py)
        config = replace(config, share_prompts=False)
    weights = weight_part(config, shape, cpu, backend)
    parts = [weights, *training_state_parts(config, shape, cpu), *other_model_parts(config, shape, device),
             *training_parts(config, shape, cpu, backend, prompt_tokens, checkpointing),
             *generation_parts(config, shape, cpu, backend, prompt_tokens),
             Part("runtime", CPU_RUNTIME if cpu else CUDA_RUNTIME, "always",
                  "Python with the libraries imported, and the data" if cpu else "CUDA context and library workspaces")]
    trainable = lora_parameters(shape, config) if config.use_lora else shape.parameters
    facts = ModelFacts(shape.parameters, shape.layers, trainable, config.use_lora, not cpu,
                       gathers_for_generation(config.trl_options))
    return shard_parts(parts, sharding, facts, Part)


def weight_bytes(config: GRPOConfig, cpu: bool) -> int:
    """backend.precision: float32 on the CPU and for full fine-tuning on a GPU; a LoRA run's frozen weights 16-bit."""
    return 4 if cpu or not config.use_lora else 2


def activation_bytes(cpu: bool) -> int:
    return 4 if cpu else 2  # fp32 on the CPU; bf16 (or fp16) autocast on a GPU


def weight_part(config: GRPOConfig, shape: ModelShape, cpu: bool, backend: str) -> Part:
    billions = f"{shape.parameters / 1e9:.2f}B parameters"
    if backend == "unsloth" and config.use_vllm and config.vllm_mode == "colocate":
        # Unsloth's engine holds the weights and training reads them there: they are part of vLLM's share.
        return Part("weights", 0.0, "always", f"{billions}, inside vLLM's share (Unsloth's engine shares them with "
                    "training)")
    if not cpu and config.four_bit:
        quantized = shape.layers * shape.layer_linear_parameters
        # peft's prepare_model_for_kbit_training upcasts what stays unquantised to fp32; Unsloth keeps it 16-bit.
        rest_bytes, rest = (2, "16-bit") if backend == "unsloth" else (4, "fp32 (peft's k-bit preparation)")
        return Part("weights", quantized * NF4_BYTES + (shape.parameters - quantized) * rest_bytes, "always",
                    f"{billions}, linear layers 4-bit, embeddings and norms {rest}")
    size = weight_bytes(config, cpu)
    return Part("weights", float(shape.parameters * size), "always",
                f"{billions} in {'fp32' if size == 4 else '16-bit'}")


def training_state_parts(config: GRPOConfig, shape: ModelShape, cpu: bool) -> list[Part]:
    """The trainable weights (LoRA's), their gradients and the optimizer's moments."""
    parts = []
    if config.use_lora:
        trainable, state_bytes = lora_parameters(shape, config), 4
        parts.append(Part("LoRA weights", trainable * 4.0, "always",
                          f"{trainable / 1e6:.1f}M parameters (r={config.lora_r}), fp32"))
    else:
        trainable, state_bytes = shape.parameters, weight_bytes(config, cpu)
    optim = optimizer_name(config.trl_options)
    moments = 2 * (1 if "8bit" in optim else state_bytes)
    return [*parts, Part("gradients", float(trainable * state_bytes), "always", "one per trainable parameter"),
            Part("optimizer state", float(trainable * moments), "always",
                 f"{optim}: two moments per trainable parameter")]


def other_model_parts(config: GRPOConfig, shape: ModelShape, device: Device) -> list[Part]:
    """The reference model, the base copy, the reward model and vLLM's share, where the run has them."""
    cpu = device.kind == "cpu"
    parts = []
    if config.beta > 0 and not config.use_lora:
        reference_bytes = 4 if cpu else 2  # TRL loads it in the checkpoint's own dtype, 16-bit for released models
        parts.append(Part("reference model", float(shape.parameters * reference_bytes), "always",
                          f"beta={config.beta:g}: a second copy"))
    if (not config.use_lora and config.beta == 0 and config.max_eval_samples > 0
            and shape.parameters <= BASE_COPY_MAX_PARAMETERS):
        parts.append(Part("base copy", float(shape.parameters * weight_bytes(config, cpu)), "always",
                          "frozen starting weights for the base-model measure (full fine-tuning, beta 0)"))
    if config.reward_model:
        try:
            reward = find_shape(config.reward_model)
            parts.append(Part("reward model", float(reward.parameters * activation_bytes(cpu)), "always",
                              f"{reward.parameters / 1e6:.0f}M parameters"))
        except Exception:  # noqa: BLE001 - its shape unknown: said in the table rather than guessed
            parts.append(Part("reward model", 0.0, "always", "shape unknown here: not counted"))
    if config.use_vllm and config.vllm_mode == "colocate":
        parts.append(Part("vLLM", config.vllm_gpu_memory_utilization * device.memory, "always",
                          f"its share ({config.vllm_gpu_memory_utilization:g}) holds its weights and KV cache"))
    return parts


def training_parts(config: GRPOConfig, shape: ModelShape, cpu: bool, backend: str, prompt_tokens: int,
                   checkpointing: bool) -> list[Part]:
    """What the backward pass keeps: the activations, and the logits of the log-probability pass."""
    act = activation_bytes(cpu)
    h, B, C = shape.hidden, config.per_device_train_batch_size, config.max_completion_length
    T = prompt_tokens + C
    per_token_layer = 6 * h + 4 * shape.attention_width + 4 * shape.intermediate * shape.active_experts
    def every_layer(checkpointed: bool) -> float:
        prompts = prompt_rows(config, shape, backend, B, training=True, checkpointing=checkpointed)
        kept = shape.layers * (prompts * prompt_tokens + B * C) * per_token_layer * act
        if prompts < B:  # a shared prompt's keys and values, indexed out to every row of its group
            kept += shape.layers * B * prompt_tokens * 2 * shape.kv_width * act
        return kept

    def activations(checkpointed: bool) -> tuple[float, str]:
        if not checkpointed:
            kept, how = every_layer(False), "every layer's tensors kept"
        elif backend == "unsloth":
            kept, how = B * T * (per_token_layer + h) * act, "checkpointed, layer inputs offloaded to CPU (Unsloth)"
        else:
            kept, how = B * T * (shape.layers * h + per_token_layer) * act, "checkpointed: layer inputs plus one layer"
        if cpu:
            kept += CPU_RETAINED_SHARE * every_layer(checkpointed)
            how += f"; plus {CPU_RETAINED_SHARE:g}x every layer's set, freed but kept by malloc"
        return kept, how

    kept, how = activations(checkpointing)
    other = activations(not checkpointing)[0]
    V = shape.vocab
    if backend == "unsloth":
        logits, logit_how = (C + 1) * V * 4 * 2, "one completion at a time (Unsloth's chunked loss), fp32"
    elif cpu:
        logits, logit_how = B * (C + 1) * V * 4 * 3, "output, tempered copy and gradient, fp32"
    else:
        logits, logit_how = B * (C + 1) * V * 2 * 2, "output and gradient, 16-bit (TRL's fused log-softmax)"
    prompts = prompt_rows(config, shape, backend, B, training=True, checkpointing=checkpointing)
    shared = f" ({prompts} prompts computed once each)" if prompts < B else ""
    return [Part("activations", float(kept), "training", f"{B} completions x {T} tokens{shared}; {how} (checkpointing "
                 f"{'off' if checkpointing else 'on'}: {other / GB:.2f} GB)"),
            Part("logits", float(logits), "training", f"{B} x {C + 1} tokens x {V} vocabulary: {logit_how}")]


def generation_parts(config: GRPOConfig, shape: ModelShape, cpu: bool, backend: str, prompt_tokens: int
                     ) -> list[Part]:
    """Sampling's KV cache and prefill, and an evaluation's cache and logits (no gradients)."""
    act = activation_bytes(cpu)
    C, V = config.max_completion_length, shape.vocab
    T = prompt_tokens + C
    cache_per_completion = shape.layers * 2 * shape.kv_width * T * act
    generated = config.per_device_train_batch_size * steps_per_generation(config)
    if config.use_vllm:
        parts = [Part("KV cache", 0.0, "generation",
                      "inside vLLM's share" if config.vllm_mode == "colocate" else "on the vLLM server")]
    else:
        mlp = shape.intermediate * shape.active_experts
        parts = [Part("KV cache", float(generated * cache_per_completion), "generation",
                      f"{generated} completions x {T} tokens"),
                 Part("prefill", float(prompt_rows(config, shape, backend, generated, training=False)
                                       * (prompt_tokens * (4 * shape.hidden + 2 * mlp) * act + V * 4)),
                      "generation", "one layer's working tensors over the prompts")]
    evaluated = config.per_device_eval_batch_size
    kept = evaluated * (cache_per_completion + (C + 1) * V * (4 if cpu else 2))
    return [*parts, Part("evaluation", float(kept), "evaluation",
                         f"{evaluated} completions: KV cache and logits, no gradients")]


def peak_of(parts) -> float:
    """What stays, plus the largest of the phases that take turns."""
    always = sum(part.bytes for part in parts if part.phase == "always")
    phases: dict[str, float] = {}
    for part in parts:
        if part.phase != "always":
            phases[part.phase] = phases.get(part.phase, 0) + part.bytes
    return always + max(phases.values(), default=0)
