"""The backend and the machine: which library loads and trains the model, in what precision, and whether this
machine can run the model at all. Decided once, before any model code is imported.

Unsloth must be imported before transformers, trl and peft, since it patches them on import; `prepare` is therefore
the first thing a run does after its config is checked, and the modules that import those libraries (see
grpo_tool/__init__.py) are imported only after it. On a machine without CUDA, importing Unsloth would switch it to a
CPU fallback that patches TRL for the whole process, so it is imported only when it is the backend.

    machine = prepare(GRPOConfig(model_name="tiny")); machine.backend, machine.reason
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass

from config import GRPOConfig
from grpo_tool.model_registry import MODEL_SIZES_BILLION, resolve_model_name
from errors import UserError

logger = logging.getLogger(__name__)

CPU_MODEL_LIMIT_BILLION = 1  # larger models are refused on a machine without CUDA
CHECKPOINTING_MIN_PARAMETERS = 100_000_000  # below this, recomputing activations costs more time than memory saved
# Full fine-tuning with beta 0 keeps a frozen copy of the starting weights for the base-model measure up to this size
# (grpo_tool/base_view.py); above it the copy would cost too much memory and the measure is off.
BASE_COPY_MAX_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class Machine:
    backend: str  # unsloth or transformers
    reason: str  # why, in words
    cuda: bool
    weights_dtype: str  # torch dtype name the weights load in: bfloat16, float16 or float32
    bf16: bool  # bfloat16 autocast in training (TRL's bf16)

    @property
    def device_map(self) -> dict | None:
        """Each process's model on its own GPU (LOCAL_RANK under accelerate); None on the CPU."""
        return {"": int(os.environ.get("LOCAL_RANK", 0))} if self.cuda else None


def package_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def choose_backend(config: GRPOConfig, cuda_available: bool, unsloth_available: bool) -> tuple[str, str]:
    """(backend, the reason in words). Unsloth where it can run, transformers + peft everywhere else."""
    four_bit = " with 4-bit weights" if config.load_in_4bit else " in 16-bit"
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
        return "unsloth", f"CUDA GPU and Unsloth installed: Unsloth{four_bit} + LoRA"
    if cuda_available:
        return "transformers", (f"CUDA GPU but no Unsloth (pip install -r requirements-gpu.txt for it): transformers + "
                                f"peft{four_bit}")
    return "transformers", "no CUDA GPU: transformers on the CPU in full precision"


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
    size = MODEL_SIZES_BILLION.get(name)
    if (size or 0) >= CPU_MODEL_LIMIT_BILLION or "bnb-4bit" in name.lower():
        described = f"{config.model_name} ({size}B parameters, pre-quantised 4-bit)" if size else config.model_name
        raise UserError(f"{described} needs a CUDA GPU and none was found: on this machine run "
                        "`python train_grpo.py --quick-test` or pass `--model tiny` (or a small model such as a "
                        "0.5B checkpoint)")


def precision(config: GRPOConfig, cuda: bool, bf16_supported: bool) -> tuple[str, bool]:
    """(weights dtype, bf16 autocast): the one precision rule, for the model, the reward model and merged exports.

    bf16 unset: on for CUDA GPUs that support it; off on the CPU, where bfloat16 is emulated and about 1.5x slower
    than fp32. On CUDA the weights load in bfloat16, or float16 where bf16 is off; on the CPU always in float32.
    """
    bf16 = config.bf16 if config.bf16 is not None else cuda and bf16_supported
    if not cuda:
        return "float32", bf16
    return ("bfloat16" if bf16 else "float16"), bf16


def prepare(config: GRPOConfig) -> Machine:
    """Decide the backend and precision for this machine, and import Unsloth now when it is the backend."""
    import torch  # torch itself is not patched by Unsloth, so it may come first

    cuda = torch.cuda.is_available()
    backend, reason = choose_backend(config, cuda, package_installed("unsloth"))
    check_model_fits_machine(config, cuda)
    if backend == "unsloth" and "unsloth" not in sys.modules:
        if "transformers" in sys.modules:
            logger.warning("transformers was imported before Unsloth (by code outside this tool), so some of "
                           "Unsloth's patches may not apply; import grpo_trainer before transformers")
        import unsloth  # noqa: F401 - imported for its patches, before transformers, trl and peft
    weights_dtype, bf16 = precision(config, cuda, cuda and torch.cuda.is_bf16_supported())
    logger.info("backend: %s (%s)", backend, reason)
    return Machine(backend, reason, cuda, weights_dtype, bf16)
