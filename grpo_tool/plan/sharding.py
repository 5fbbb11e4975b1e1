"""Several devices in a plan: what each engine divides among a run's processes (DDP nothing, DeepSpeed ZeRO the
optimizer state, then the gradients, then the weights; FSDP all three), and what it gathers back. For `--plan` the
engine and the number of processes come from `--sharding` and `--num-processes` or from an accelerate config
(`--accelerate-config`); at a run's start, from what `accelerate launch` told the process (grpo_tool/launch.py, which
holds the Sharding value).

    assert divides(Sharding("zero3", 8), "weights") and not divides(Sharding("zero2", 8), "weights")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from grpo_tool.errors import UserError
from grpo_tool.launch import ONE_DEVICE, ZERO_STAGES, Sharding, reshards

# The parts of memory.py's plan each engine divides by the number of processes. ZeRO-3 and FSDP shard every parameter
# they wrap, the reference model's too (TRL prepares it with the same engine); the frozen base copy that full
# fine-tuning keeps for the base-model measure is a plain tensor copy and stays whole.
DIVIDED = {
    "none": (),
    "zero1": ("optimizer state",),
    "zero2": ("optimizer state", "gradients"),
    "zero3": ("optimizer state", "gradients", "weights", "LoRA weights", "reference model"),
    "fsdp": ("optimizer state", "gradients", "weights", "LoRA weights", "reference model"),
}
NAMES = {"none": "DDP", "zero1": "DeepSpeed ZeRO-1", "zero2": "DeepSpeed ZeRO-2", "zero3": "DeepSpeed ZeRO-3",
         "fsdp": "FSDP"}
# Layers whose full weights a sharded engine holds at once while computing: the one at work and the one fetched ahead.
GATHERED_LAYERS = 2


def divides(sharding: Sharding, part: str) -> bool:
    """Whether the engine divides this part of the plan (memory.py's name for it) among the processes."""
    return part in DIVIDED[sharding.engine]


def describe(sharding: Sharding) -> str:
    """The table's line: the engine, where it was read, and what it divides."""
    divided = [part for part in ("weights", "gradients", "optimizer state") if divides(sharding, part)]
    what = (f"{', '.join(divided)} divided by {sharding.processes}" if divided and sharding.processes > 1 else
            "every device holds a full replica" if sharding.processes > 1 else "one process")
    offloaded = [name for name, on in (("optimizer state", sharding.offload_optimizer),
                                       ("weights", sharding.offload_weights)) if on]
    if offloaded:
        what += f"; {' and '.join(offloaded)} offloaded to CPU memory"
    return (f"{sharding.processes} device(s), {NAMES[sharding.engine]} ({sharding.source}): {what}; figures are "
            "per device")


def from_flags(engine: str | None, processes: int | None, accelerate_config: str | None) -> Sharding:
    """--sharding and --num-processes over what --accelerate-config says (a flag given beats the file, as flags beat
    config files everywhere in this tool)."""
    sharding = read_accelerate_config(os.path.expanduser(accelerate_config)) if accelerate_config else ONE_DEVICE
    given = [f"--sharding {engine}"] if engine is not None else []
    given += [f"--num-processes {processes}"] if processes is not None else []
    if given:
        source = " and ".join(given) + (f" over {accelerate_config}" if accelerate_config else "")
        sharding = replace(sharding, engine=engine or sharding.engine, processes=processes or sharding.processes,
                           source=source)
    return sharding


def read_accelerate_config(path: str) -> Sharding:
    """An accelerate config file, read by accelerate's own loader (so it is refused where `accelerate launch` would
    refuse it): its processes (all machines together), engine, ZeRO stage and offloading."""
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    where = f"--accelerate-config {path}"
    if not os.path.isfile(path):
        raise UserError(f"{where}: no such file")
    try:
        with open(path, encoding="utf-8") as file:
            content = yaml.safe_load(file)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"{where}: not readable YAML ({str(error).strip().splitlines()[0]})") from None
    if not isinstance(content, dict):
        raise UserError(f"{where}: not an accelerate config (a mapping of settings such as distributed_type and "
                        "num_processes)")
    try:
        loaded = load_config_from_file(path)
    except Exception as error:  # noqa: BLE001 - accelerate's loader raises many kinds; each is a file mistake here
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{where}: accelerate cannot read it ({first})") from None
    kind = getattr(loaded.distributed_type, "value", str(loaded.distributed_type))
    processes = loaded.num_processes if isinstance(loaded.num_processes, int) and loaded.num_processes > 0 else 1
    base = Sharding(processes=processes, source=os.path.basename(path))
    if kind in ("NO", "MULTI_GPU", "MULTI_CPU"):
        return base
    if kind == "DEEPSPEED":
        return deepspeed_sharding(base, dict(loaded.deepspeed_config or {}), where)
    if kind == "FSDP":
        fsdp = dict(loaded.fsdp_config or {})
        offload = str(fsdp.get("fsdp_offload_params", False)).lower() == "true"
        return replace(base, engine="fsdp", offload_optimizer=offload, offload_weights=offload,
                       reshard_after_forward=reshards(fsdp.get("fsdp_reshard_after_forward", True)))
    raise UserError(f"{where}: distributed_type {kind}; the plan knows DDP (MULTI_GPU), DEEPSPEED and FSDP")


def deepspeed_sharding(base: Sharding, settings: dict, where: str) -> Sharding:
    """ZeRO's stage and offloading, from the accelerate config or the DeepSpeed JSON it names."""
    stage, optimizer_device, param_device = (settings.get("zero_stage"), settings.get("offload_optimizer_device"),
                                             settings.get("offload_param_device"))
    if settings.get("deepspeed_config_file"):
        import json

        try:
            with open(settings["deepspeed_config_file"], encoding="utf-8") as file:
                zero = json.load(file).get("zero_optimization", {})
        except (OSError, ValueError, AttributeError) as error:
            raise UserError(f"{where}: its deepspeed_config_file cannot be read ({error})") from None
        stage = zero.get("stage", 0)
        optimizer_device = (zero.get("offload_optimizer") or {}).get("device")
        param_device = (zero.get("offload_param") or {}).get("device")
    if stage not in ZERO_STAGES:
        raise UserError(f"{where}: zero_stage {stage!r}; DeepSpeed's stages are 0, 1, 2 and 3")
    return replace(base, engine=ZERO_STAGES[stage], offload_optimizer=optimizer_device not in (None, "none"),
                   offload_weights=stage == 3 and param_device not in (None, "none"))


def gathers_for_generation(trl_options: dict) -> bool:
    """TRL's ds3_gather_for_generation (on by default): under ZeRO-3, every weight gathered on every device while
    sampling, instead of layer by layer."""
    return bool(trl_options.get("ds3_gather_for_generation", True))


@dataclass(frozen=True)
class ModelFacts:
    """What the division needs to know of the planned model and run."""
    parameters: int
    layers: int
    trainable: int
    lora: bool
    gpu: bool
    gather_for_generation: bool


def shard_parts(parts: list, sharding: Sharding, facts: ModelFacts, make) -> list:
    """memory.py's parts (one device, a full replica) as one device of `sharding` holds them, with what the engine
    gathers back added; `make` builds a part (memory.Part), so that this module needs nothing of memory.py."""
    if sharding.engine == "none" and sharding.processes == 1:
        return parts
    divided = [divide(part, sharding, facts) for part in parts]
    extra = []
    if sharding.engine == "none":
        gradients = next(part.bytes for part in divided if part.name == "gradients")
        extra.append(make("gradient buckets", gradients, "always", "DDP's all-reduce buckets: a second copy of the "
                                                                   "gradients"))
    if divides(sharding, "weights"):
        whole = facts.parameters * (2 if facts.gpu else 4)  # gathered in the compute dtype
        rest = whole - (0 if sharding.offload_weights else whole / sharding.processes)
        layers = GATHERED_LAYERS * whole / facts.layers
        held = "the layer at work and the next, gathered whole"
        if sharding.engine == "fsdp" and not sharding.reshard_after_forward:
            extra.append(make("gathered weights", rest, "training", "every layer stays gathered from forward to "
                                                                    "backward (reshard_after_forward false)"))
        else:
            extra.append(make("gathered layers", layers, "training", held))
        for phase in ("generation", "evaluation"):
            if sharding.engine == "zero3" and facts.gather_for_generation:
                extra.append(make("gathered weights", rest, phase, "TRL gathers every weight while sampling "
                                  "(ds3_gather_for_generation; false gathers layer by layer, slower)"))
            else:
                extra.append(make("gathered layers", layers, phase, held + " at every generated token"))
    return divided + extra


def divide(part, sharding: Sharding, facts: ModelFacts):
    """One part under the engine: DeepSpeed's 16-bit copy of the trainable weights with an fp32 master copy in the
    optimizer (its bf16/fp16 engine casts the model; on a GPU the tool always trains in mixed precision), then the
    division by the number of processes, then what is offloaded to CPU memory."""
    size, note = part.bytes, part.note
    trained_weights = "LoRA weights" if facts.lora else "weights"
    if sharding.deepspeed and facts.gpu:
        if part.name == trained_weights:
            size -= facts.trainable * 2.0  # fp32 (LoRA's adapter, full fine-tuning's weights) to 16-bit
            note += "; DeepSpeed holds the trained ones in 16-bit"
        elif part.name == "gradients":
            size, note = facts.trainable * 2.0, note + ", 16-bit under DeepSpeed"
        elif part.name == "optimizer state":
            size, note = size + facts.trainable * 4.0, note + " plus DeepSpeed's fp32 master copy"
    if divides(sharding, part.name) and sharding.processes > 1:
        size, note = size / sharding.processes, note + f"; divided by {sharding.processes}"
    offloaded = (sharding.offload_optimizer and part.name == "optimizer state") or \
        (sharding.offload_weights and part.name in ("weights", "LoRA weights", "reference model")) or \
        (sharding.engine == "fsdp" and sharding.offload_weights and part.name == "gradients")
    if offloaded:
        size, note = 0.0, note + f"; offloaded to CPU memory ({size / 1024**3:.2f} GB there)"
    return replace(part, bytes=float(size), note=note)


MAX_DEVICES = 1024


def devices_that_fit(current: Sharding, memory: float, four_bit: bool, peak) -> list[str]:
    """For a run that does not fit its device: the fewest devices on which each engine that shards would fit it.
    `peak(sharding, changes)` is the per-device peak under `sharding` with the config's fields changed by `changes`
    (ZeRO-3 and FSDP shard 16-bit weights only; ZeRO-3 is tried without TRL's gathering for sampling when gathering
    cannot fit on any number of devices)."""
    ideas = []
    for engine in ("zero2", "zero3", "fsdp"):
        variants = [({}, "")]
        if four_bit and "weights" in DIVIDED[engine]:
            variants = [({"load_in_4bit": False}, " with --no-load-in-4bit")]
        if engine == "zero3":
            changes, label = variants[0]
            variants.append(({**changes, "trl_options": {"ds3_gather_for_generation": False}},
                             label + " with --trl-option ds3_gather_for_generation=false (slower sampling)"))
        for changes, label in variants:
            def fits(devices: int, changes=changes, engine=engine) -> bool:
                return peak(replace(current, engine=engine, processes=devices, source="planned"), changes) <= memory

            devices = fewest(2, fits)
            if devices:
                each = peak(replace(current, engine=engine, processes=devices), changes) / 1024**3
                ideas.append(f"{NAMES[engine]} on {devices} devices{label}: {each:.1f} GB each")
                break
        else:
            ideas.append(f"{NAMES[engine]} on no number of devices: what it leaves whole on each is too large alone")
    return ideas


def fewest(low: int, fits) -> int | None:
    """The smallest value from `low` up to MAX_DEVICES for which fits(value) holds (fits only gets truer with more
    devices, since each divides more and gathers no more)."""
    high = MAX_DEVICES
    if low > high or not fits(high):
        return None
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return low
