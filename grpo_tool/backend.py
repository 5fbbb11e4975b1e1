"""The backend and the machine: which library loads and trains the model, in what precision, and whether this
machine can run the model at all. Decided once, before any model code is imported.

Unsloth must be imported before transformers, trl and peft, since it patches them on import; `prepare` is therefore
the first thing a run does after its config is checked, and the modules that import those libraries (see
grpo_tool/__init__.py) are imported only after it. On a machine without CUDA, importing Unsloth would switch it to a
CPU fallback that patches TRL for the whole process, so it is imported only when it is the backend.

    machine = prepare(GRPOConfig(model_name="tiny"))    # machine.backend, machine.reason: which library, and why
    assert machine.backend == ("unsloth" if machine.cuda and package_installed("unsloth") else "transformers")
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass

from grpo_tool.errors import UserError
from grpo_tool.launch import from_environment, launcher_says
from grpo_tool.model_registry import PRE_QUANTISED, resolve_model_name
from grpo_tool.model_shapes import known_shape
from grpo_tool.settings import GRPOConfig, explicit_settings

logger = logging.getLogger(__name__)

CPU_MODEL_LIMIT_BILLION = 1  # larger models are refused on a machine without CUDA
# Metrics TRL logs that Unsloth's replacement of TRL's loss does not (unsloth/models/rl_replacements.py logs only
# completion_length and kl).
UNSLOTH_UNLOGGED = ("entropy",)
# Where Unsloth writes the trainers it generates (it would use the working directory): one place per user, beside the
# tool's other caches, so that a run writes nothing outside its output dir.
UNSLOTH_CACHE = "unsloth_compiled_cache"
CHECKPOINTING_MIN_PARAMETERS = 100_000_000  # below this, recomputing activations costs more time than memory saved
# Full fine-tuning with beta 0 keeps a frozen copy of the starting weights for the base-model measure up to this size
# (grpo_tool/base_view.py); above it the copy would cost too much memory and the measure is off.
BASE_COPY_MAX_PARAMETERS = 1_000_000_000


def checkpointing_by_default(cuda: bool, parameters: int) -> bool:
    """Gradient checkpointing when gradient_checkpointing is unset: on for CUDA models of 100M+ parameters. The run
    (trl_setup.trl_arguments) and the plan (grpo_tool/plan/memory.py) both ask here."""
    return cuda and parameters >= CHECKPOINTING_MIN_PARAMETERS


@dataclass(frozen=True)
class Machine:
    backend: str  # unsloth or transformers
    reason: str  # why, in words
    cuda: bool
    weights_dtype: str  # torch dtype name the policy's weights load in: bfloat16, float16 or float32
    bf16: bool  # bfloat16 autocast in training (TRL's bf16)
    notices: tuple[str, ...] = ()  # settings the user gave that this machine uses differently, or not at all

    @property
    def used(self) -> dict:
        """What this machine does with the precision settings, for the run record."""
        return {"weights_dtype": self.weights_dtype, "autocast": "bfloat16" if self.bf16 else
                "float16" if self.fp16 else None, "merged_dtype": self.compute_dtype, "notices": list(self.notices)}

    @property
    def fp16(self) -> bool:
        """float16 autocast in training (TRL's fp16): on a CUDA GPU without bf16, never on the CPU."""
        return self.cuda and not self.bf16

    @property
    def compute_dtype(self) -> str:
        """The dtype of what only runs forward or is exported: reward models, merged weights. 16-bit on a GPU (the
        autocast dtype), float32 on the CPU."""
        if not self.cuda:
            return "float32"
        return "bfloat16" if self.bf16 else "float16"

    @property
    def device_map(self) -> dict | None:
        """Each process's model on its own GPU (LOCAL_RANK under accelerate); None on the CPU."""
        return {"": int(os.environ.get("LOCAL_RANK", 0))} if self.cuda else None


def package_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def choose_backend(config: GRPOConfig, cuda_available: bool, unsloth_available: bool,
                   engine: str = "none") -> tuple[str, str]:
    """(backend, the reason in words). Unsloth where it can run, transformers + peft everywhere else. `engine` is
    the sharding engine the run was launched under (grpo_tool/launch.py): Unsloth is not run under DeepSpeed
    or FSDP, whose wrappers its patched model and its own gradient offloading were not checked against."""
    four_bit = (" with 4-bit weights" if config.four_bit else " in 16-bit" if config.use_lora
                else ", full fine-tuning with float32 weights")
    if engine != "none" and cuda_available:
        sharded = "DeepSpeed" if engine.startswith("zero") else "FSDP"
        if config.backend == "unsloth":
            raise UserError(f"--backend unsloth under {sharded}: this tool runs Unsloth without a sharding engine "
                            "(one GPU, or DDP); use --backend transformers, which auto picks under DeepSpeed and FSDP")
        if engine in ("zero3", "fsdp") and config.four_bit:
            raise UserError(f"4-bit weights under {sharded} with its weights sharded: bitsandbytes' quantised weights "
                            "are not sharded by it here; add --no-load-in-4bit (16-bit weights, divided among the "
                            "GPUs)")
        return "transformers", f"launched under {sharded}: transformers + peft{four_bit}"
    if config.backend == "unsloth":
        if not cuda_available:
            raise UserError("--backend unsloth needs a CUDA GPU and none was found: use --backend auto or "
                            "transformers")
        if not unsloth_available:
            raise UserError("--backend unsloth, but the unsloth package is not installed: pip install -r "
                            "requirements-gpu.txt, or use --backend transformers")
        return "unsloth", f"asked for (--backend unsloth){four_bit}"
    if config.backend == "transformers":
        return "transformers", ("asked for (--backend transformers)" + (four_bit if cuda_available else ", on the CPU"))
    if cuda_available and unsloth_available:
        return "unsloth", f"CUDA GPU and Unsloth installed: Unsloth{four_bit}{' + LoRA' if config.use_lora else ''}"
    if cuda_available:
        return "transformers", (f"CUDA GPU but no Unsloth (pip install -r requirements-gpu.txt for it): transformers + "
                                f"peft{four_bit}")
    return "transformers", "no CUDA GPU: transformers on the CPU in full precision"


def backend_problem(config: GRPOConfig, backend: str, cuda: bool) -> str | None:
    """A combination the chosen backend cannot run as asked (found in Unsloth's, TRL's and peft's sources), or None."""
    if backend == "unsloth" and config.use_vllm and not config.use_lora:
        return ("--use-vllm with full fine-tuning (--no-lora): Unsloth's vLLM engine serves LoRA runs only "
                "(fast_inference cannot be combined with full_finetuning); use --lora, or leave --use-vllm off")
    if backend == "transformers" and cuda and config.use_vllm and config.four_bit:
        return ("--use-vllm with 4-bit weights on the transformers backend: TRL hands vLLM the weights by merging the "
                "adapter into the 4-bit base and out again at every generation, and each round trip re-quantises the "
                "base, so it drifts; use --no-load-in-4bit, or the Unsloth backend (its vLLM shares the weights)")
    metric = (config.metric_for_best_model or "").removeprefix("eval_")
    if backend == "unsloth" and metric in UNSLOTH_UNLOGGED:
        return (f"--metric-for-best-model {config.metric_for_best_model}: Unsloth's GRPO loss does not log {metric}, "
                "so the first evaluation that saves would fail; choose another metric (reward, base_nll, ...)")
    return None


def check_model_fits_machine(config: GRPOConfig, cuda_available: bool) -> None:
    """Refuse, before any download, what this machine cannot run: a big or pre-quantised model without a GPU, vLLM
    without a GPU or without the vllm package."""
    if config.use_vllm and not cuda_available:
        raise UserError("--use-vllm needs a CUDA GPU and none was found: leave it off")
    if config.use_vllm and not package_installed("vllm"):
        raise UserError("--use-vllm is set, but the vllm package is not installed: pip install vllm, or leave it off")
    if cuda_available:
        return
    name = resolve_model_name(config.model_name)
    shape = known_shape(name)  # the presets' shapes, and those of common families, known without a download
    size = round(shape.parameters / 1e9, 1) if shape else None
    if (size or 0) >= CPU_MODEL_LIMIT_BILLION or PRE_QUANTISED in name.lower():
        quantized = ", pre-quantised 4-bit" if PRE_QUANTISED in name.lower() else ""
        described = f"{config.model_name} ({size:g}B parameters{quantized})" if size else config.model_name
        raise UserError(f"{described} needs a CUDA GPU and none was found: on this machine run "
                        "`python train_grpo.py --quick-test` or pass `--model tiny` (or a small model such as a "
                        "0.5B checkpoint)")


def check_machine(config: GRPOConfig) -> None:
    """check_model_fits_machine for this machine: what needs only torch's look at CUDA, before any data or model is
    loaded (the backend, and Unsloth with it, is decided later, by prepare)."""
    import torch  # torch itself is not patched by Unsloth, so it may come first

    check_model_fits_machine(config, torch.cuda.is_available())


def precision(config: GRPOConfig, cuda: bool, bf16_supported: bool) -> tuple[str, bool]:
    """(weights dtype, bf16 autocast): the one precision rule, for the policy (Machine.compute_dtype derives the rest).

    bf16 unset: on for CUDA GPUs that support it; off on the CPU, where bfloat16 is emulated and about 1.5x slower
    than fp32. On the CPU the weights are float32. On CUDA a LoRA run's frozen weights load in bfloat16, or float16
    where bf16 is off (the adapter itself is float32, and autocast, bf16 or else fp16, computes in 16 bits); full
    fine-tuning keeps float32 weights under the same autocast, since Adam's steps at the usual learning rates are far
    below half a bfloat16 unit of a typical weight and would round away (float32 master weights, as mixed precision
    training means).
    """
    bf16 = config.bf16 if config.bf16 is not None else cuda and bf16_supported
    if not cuda or not config.use_lora:
        return "float32", bf16
    return ("bfloat16" if bf16 else "float16"), bf16


def deepspeed_launch_problem(cuda: bool, bf16: bool) -> str | None:
    """A process launched for DeepSpeed where it cannot run: deepspeed not installed, or the accelerate config's
    mixed_precision (DeepSpeed's own bf16/fp16 switch) not the run's precision; transformers would refuse either only
    once the trainer is being built, with a traceback from every process."""
    if not launcher_says("ACCELERATE_USE_DEEPSPEED"):
        return None
    if not package_installed("deepspeed"):  # launched by a launcher that did not check (torchrun with accelerate's env)
        return ("this process was launched to run DeepSpeed (ACCELERATE_USE_DEEPSPEED), which is not installed here: "
                "pip install deepspeed, or launch with config/accelerate/ddp.yaml")
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    run = "bf16" if bf16 else "fp16" if cuda else "no"
    if launched == run:
        return None
    trains = {"bf16": "bfloat16 mixed precision", "fp16": "float16 mixed precision (this GPU has no bfloat16)",
              "no": "float32" + ("" if cuda else " (a CPU)")}[run]
    return (f"the accelerate config says mixed_precision: {launched}, but this run trains in {trains}, and DeepSpeed "
            f"must be told the same: set mixed_precision: {run} in the accelerate config (or pass --mixed_precision "
            f"{run} to accelerate launch)")


def local_processes() -> int:
    """Processes a launcher started on this machine (torchrun's LOCAL_WORLD_SIZE, which accelerate launch sets)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def cpu_cores() -> int:
    """The cores this process may run on (a container's or a scheduler's limit, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def unused_settings(config: GRPOConfig, explicit: frozenset[str], cuda: bool, processes: int, cores: int) -> list[str]:
    """One sentence for each setting the user gave (`explicit`: see settings.explicit_settings) that this machine
    uses differently from what it says, or not at all. A setting that cannot work is refused elsewhere; these run,
    and the user is told how."""
    lines = []
    if not cuda and config.four_bit and "load_in_4bit" in explicit:
        lines.append("load_in_4bit: no CUDA GPU, so the weights load in float32 (bitsandbytes' 4-bit weights need a "
                     "GPU)")
    if not cuda and config.bf16 and "bf16" in explicit:
        lines.append("bf16: used as asked, but this CPU emulates bfloat16 and trains about 1.5x slower than in "
                     "float32 (leave bf16 unset for float32 here)")
    if not config.use_vllm and (given := sorted(name for name in explicit if name.startswith("vllm_"))):
        lines.append(f"{', '.join(given)}: unused, since use_vllm is off (completions are sampled by the trainer's "
                     "own generate); add --use-vllm to use vLLM")
    if "save_merged" in explicit and config.save_merged:
        if not config.use_lora:
            lines.append("save_merged: a full fine-tuning run's final_model already holds the whole merged weights, "
                         "so nothing more is written")
        elif not cuda:
            lines.append("save_merged: no CUDA GPU, so final_model/merged is written in float32 (16-bit on a GPU)")
    if not (config.tools or config.environments) and (given := sorted({"max_tool_calls", "tool_timeout"} & explicit)):
        lines.append(f"{', '.join(given)}: unused, since the run has no tools (add --tools or --environment)")
    if not cuda and processes > cores:
        lines.append(f"{processes} processes were launched on this machine's {cores} CPU cores and no CUDA GPU: they "
                     "share the cores, so each step is slower than with one process per core; launch with "
                     f"--num_processes {cores} (or 1) here")
    return lines


def quiet_unsloth() -> None:
    """Before Unsloth is imported: no statistics download at load (it waits up to 120 s offline, then raises), and
    its generated code in the user's cache rather than the working directory. A user's own setting wins."""
    from grpo_tool.tiny_model import cache_root

    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(cache_root() / UNSLOTH_CACHE))


def prepare(config: GRPOConfig) -> Machine:
    """Decide the backend and precision for this machine, and import Unsloth now when it is the backend."""
    import torch  # torch itself is not patched by Unsloth, so it may come first

    cuda = torch.cuda.is_available()
    backend, reason = choose_backend(config, cuda, package_installed("unsloth"), from_environment().engine)
    check_model_fits_machine(config, cuda)
    if problem := backend_problem(config, backend, cuda):
        raise UserError(problem)
    if backend == "unsloth" and "unsloth" not in sys.modules:
        if "transformers" in sys.modules:
            logger.warning("transformers was imported before Unsloth (by code outside this tool), so some of "
                           "Unsloth's patches may not apply; import grpo_trainer before transformers")
        quiet_unsloth()
        import unsloth  # noqa: F401 - imported for its patches, before transformers, trl and peft
    weights_dtype, bf16 = precision(config, cuda, cuda and torch.cuda.is_bf16_supported())
    if problem := deepspeed_launch_problem(cuda, bf16):
        raise UserError(problem)
    logger.info("backend: %s (%s)", backend, reason)
    notices = unused_settings(config, explicit_settings(config), cuda, local_processes(), cpu_cores())
    for line in notices:
        logger.info("settings: %s", line)
    return Machine(backend, reason, cuda, weights_dtype, bf16, tuple(notices))
