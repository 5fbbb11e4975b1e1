"""`--plan`'s plan of one device and the start-up memory check: memory.py's parts and timing.py's seconds for a
config, a model shape and a device, whether they fit, and each setting that, changed alone, would make them fit. The
same arithmetic checks a real run at start-up (run_check, called from grpo_trainer.py).

    from config import build_config
    plan = make_plan(build_config(mode="quick_test"), Device.gpu(24), prompt=(80, "given"))    # the tiny quick test
    assert round(plan.peak / GB, 1) == 0.7 and plan.fits and what_would_fit(plan) == []    # fits: nothing to change
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from grpo_tool.backend import choose_backend, package_installed
from grpo_tool.errors import UserError
from grpo_tool.launch import ONE_DEVICE, Sharding, from_environment
from grpo_tool.model_shapes import ModelShape, find_shape, shape_from_config
from grpo_tool.plan.device import GB, Device, available_memory, resident_memory
from grpo_tool.plan.memory import Part, checkpointing_on, count_parts, peak_of, steps_per_generation
from grpo_tool.plan.sharding import devices_that_fit
from grpo_tool.plan.timing import evaluation_seconds, step_seconds
from grpo_tool.settings import GRPOConfig

MIN_USEFUL_COMPLETION = 16  # a shorter completion cap is not offered as a way to fit


@dataclass(frozen=True)
class Plan:
    config: GRPOConfig
    shape: ModelShape
    device: Device
    backend: str
    prompt_tokens: int
    prompt_source: str
    checkpointing: bool
    parts: tuple[Part, ...]
    seconds_per_step: float
    seconds_by_phase: dict
    time_note: str
    sharding: Sharding = ONE_DEVICE
    seconds_per_evaluation: float = 0.0  # 0: not estimated, or no evaluation

    @property
    def peak(self) -> float:
        return peak_of(self.parts)

    @property
    def runtime(self) -> float:
        return sum(part.bytes for part in self.parts if part.name == "runtime")

    @property
    def fits(self) -> bool:
        return self.peak <= self.device.memory

    @functools.cached_property
    def would_fit(self) -> list[str]:
        """what_would_fit(self), worked out once (it re-plans each setting by bisection)."""
        return what_would_fit(self)


def make_plan(config: GRPOConfig, device: Device, shape: ModelShape | None = None, *, prompt: tuple[int, str],
              backend: str | None = None, sharding: Sharding = ONE_DEVICE) -> Plan:
    """The plan of one device of a run: `prompt` is (the prompt tokens counted, where that figure comes from), as
    grpo_tool/plan/prompts.py finds it."""
    shape = shape or find_shape(config.model_name)
    cuda = device.kind == "cuda"
    if config.use_vllm and not cuda:
        raise UserError("--use-vllm needs a CUDA GPU and none was found: plan for one with --gpu-memory GB, or leave "
                        "it off")
    if backend is None:
        # Planning a GPU from elsewhere (--gpu-memory): auto means Unsloth, what requirements-gpu.txt installs.
        planned_elsewhere = device.how.startswith("--gpu-memory")
        backend = choose_backend(config, cuda, package_installed("unsloth") or planned_elsewhere,
                                 sharding.engine)[0] if cuda else "transformers"
    prompt_tokens, prompt_source = prompt
    checkpointing = checkpointing_on(config, shape, device)
    parts = count_parts(config, shape, device, backend, prompt_tokens, checkpointing, sharding)
    seconds, split, note, evaluation = 0.0, {}, "not estimated", 0.0
    if device.tflops:
        weights = next(part.bytes for part in parts if part.name == "weights")
        seconds, split, note = step_seconds(config, shape, device, backend, prompt_tokens, checkpointing, weights)
        evaluation = evaluation_seconds(config, shape, device, backend, prompt_tokens, weights, sharding.processes)
    return Plan(config, shape, device, backend, prompt_tokens, prompt_source, checkpointing, tuple(parts), seconds,
                split, note, sharding, evaluation)


def run_check(config: GRPOConfig, machine, model_config, prompt_tokens: int | None) -> Plan | None:
    """At a run's start: the plan for the loaded model's shape, the data's longest prompt and this machine; a
    warning when it will not fit. Returns the plan (None when the model's config cannot be read as a decoder)."""
    import logging

    logger = logging.getLogger(__name__)
    try:
        shape = shape_from_config(model_config.to_dict(), "the loaded model's config")
    except UserError as error:
        logger.info("memory plan skipped: %s", error)
        return None
    if machine.cuda:
        import torch

        properties = torch.cuda.get_device_properties(torch.cuda.current_device())
        device = Device("cuda", properties.total_memory, properties.name, 0, 0, "detected")
    else:
        # The process already holds the libraries and the weights, so its own share counts as available.
        device = Device("cpu", available_memory() + resident_memory(), "this machine's memory", 0, 0, "detected")
    budget = config.max_seq_length - config.max_completion_length
    prompt = (prompt_tokens, "the longest training prompt") if prompt_tokens else (budget, "the prompt budget")
    try:  # the device's share under the engine accelerate launch named (its memory is already this process's)
        plan = make_plan(config, device, shape, prompt=prompt, backend=machine.backend, sharding=from_environment())
    except UserError as error:  # a model or setting the plan cannot count: the run goes on without it
        logger.info("memory plan skipped: %s", error)
        return None
    if plan.fits:
        logger.info("memory plan: peak about %.1f GB of %.1f GB available (--plan with the same flags shows the "
                    "parts)", plan.peak / GB, device.memory / GB)
    else:
        logger.warning("memory: this run needs about %.1f GB at its peak but %s has %.1f GB, so it will likely run "
                       "out of memory at the first step (its longest prompts go first). Would fit: %s. See "
                       "python train_grpo.py --plan with the same flags for the parts", plan.peak / GB,
                       "the GPU" if machine.cuda else "this machine", device.memory / GB,
                       "; ".join(plan.would_fit))
    return plan


def largest_fitting(low: int, high: int, fits) -> int | None:
    """The largest value in [low, high] for which fits(value) holds, assuming it holds below a threshold."""
    if not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def what_would_fit(plan: Plan) -> list[str]:
    """Each setting changed alone to the largest value that fits; empty when the run fits as it is."""
    if plan.fits:
        return []
    config, memory = plan.config, plan.device.memory

    def peak(**changes):
        changed = replace(config, **changes)
        return peak_of(count_parts(changed, plan.shape, plan.device, plan.backend, plan.prompt_tokens,
                                   changes.get("gradient_checkpointing", plan.checkpointing), plan.sharding))

    ideas = []
    if not plan.checkpointing and peak(gradient_checkpointing=True) <= memory:
        ideas.append("gradient_checkpointing on (--gradient-checkpointing) fits as it is")
    length = largest_fitting(1, config.max_completion_length - 1,
                             lambda value: peak(max_completion_length=value) <= memory)
    if length and length >= min(MIN_USEFUL_COMPLETION, config.max_completion_length // 2):
        ideas.append(f"max_completion_length {length} (from {config.max_completion_length})")
    spg = steps_per_generation(config)
    batch = largest_fitting(1, config.per_device_train_batch_size - 1,
                            lambda value: peak(per_device_train_batch_size=value) <= memory)
    if batch:
        keeping = max((size for size in range(1, batch + 1) if (size * spg) % config.group_size == 0), default=None)
        group = max((size for size in range(2, config.group_size + 1) if (batch * spg) % size == 0), default=None)
        if keeping:
            ideas.append(f"per_device_train_batch_size {keeping} (from {config.per_device_train_batch_size}); raise "
                         "gradient_accumulation_steps to keep the completions per step")
        elif group:
            ideas.append(f"per_device_train_batch_size {batch} with group_size {group} (from "
                         f"{config.per_device_train_batch_size} and {config.group_size}); raise "
                         "gradient_accumulation_steps to keep the completions per step")
    if plan.device.kind == "cuda":
        def sharded_peak(sharding: Sharding, changes: dict) -> float:
            options = {**config.trl_options, **changes.get("trl_options", {})}
            changed = replace(config, **{**changes, "trl_options": options})
            return peak_of(count_parts(changed, plan.shape, plan.device, "transformers", plan.prompt_tokens,
                                       plan.checkpointing, sharding))

        ideas += devices_that_fit(plan.sharding, memory, config.four_bit, sharded_peak)
    if not ideas:
        stays = sum(part.bytes for part in plan.parts if part.phase == "always")
        if plan.device.kind == "cpu":
            remedies = ("a smaller model, or a machine with more memory" if config.use_lora else
                        "LoRA, a smaller model, or a machine with more memory")
        elif config.four_bit:
            remedies = "a smaller model, or a GPU with more memory"
        else:
            remedies = "4-bit weights (--load-in-4bit) and LoRA, a smaller model, or a GPU with more memory"
        ideas.append(f"nothing in batch or length fits: the weights, optimizer and runtime alone take "
                     f"{stays / GB:.1f} GB; use {remedies}")
    return ideas
