"""Our config as TRL's arguments (GRPOConfig's, with W&B set up and the options TRL refuses named), and the model
adjustments made around TRL's trainer. Heavy: imported only after backend.prepare (see grpo_tool/__init__.py); TRL's
trainer with the tool's hooks is in grpo_tool/trainer_hooks.py.

    from grpo_tool.backend import prepare
    config = GRPOConfig(model_name="tiny", gradient_checkpointing=False, trl_options={"scale_rewards": "batch"})
    args = trl_arguments(config, prepare(config), model=None, evaluate=True)
    assert args.num_generations == config.group_size and args.scale_rewards == "batch"    # our names, and TRL's options
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch
import trl

from grpo_tool.backend import Machine, checkpointing_by_default
from grpo_tool.errors import UserError
from grpo_tool.models import model_parameters
from grpo_tool.settings import GRPOConfig, resolved_eval_samples
from grpo_tool.trl_options import SAME_ON_EVERY_BACKEND

logger = logging.getLogger(__name__)


def merges_lora_for_generation(config: GRPOConfig, machine: Machine, model) -> bool:
    """Whether sampling runs on merged LoRA weights: asked for, or unset and LoRA on unquantised CPU weights."""
    lora = hasattr(model, "merge_adapter") and hasattr(model, "peft_config")
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if config.merge_lora_for_generation and (not lora or quantized):
        raise UserError("--merge-lora-for-generation needs a LoRA adapter on unquantised weights (merging into "
                        "4-bit weights would round the update away): use it with --no-load-in-4bit, or leave it unset")
    if config.merge_lora_for_generation is None:
        return lora and not quantized and not machine.cuda and machine.backend == "transformers"
    return config.merge_lora_for_generation


def configure_wandb(config: GRPOConfig) -> list[str]:
    """TRL's report_to for W&B. W&B never prompts for a login: without credentials it runs offline."""
    if not config.wandb_project:
        return []
    try:
        import wandb  # noqa: F401 - optional: only whether it is installed matters here
    except ImportError:
        logger.warning("W&B: the wandb package is not installed; logging to W&B is skipped (pip install wandb)")
        return []
    os.environ["WANDB_PROJECT"] = config.wandb_project
    os.environ.setdefault("WANDB_DIR", config.output_dir)
    try:
        netrc = (Path.home() / ".netrc").read_text(encoding="utf-8", errors="replace")
    except OSError:
        netrc = ""
    if not (os.environ.get("WANDB_API_KEY") or "api.wandb.ai" in netrc) and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
        logger.warning("W&B: no credentials (WANDB_API_KEY or `wandb login`), so the run is logged offline under "
                       "%s; upload it later with `wandb sync`", config.output_dir)
    return ["wandb"]


def trl_arguments(config: GRPOConfig, machine: Machine, model, evaluate: bool,
                  trackers: bool = True) -> trl.GRPOConfig:
    """TRL's GRPOConfig for this run: our fields mapped onto TRL's, then the trl_options pass-through. Before a model
    is loaded (`model` None, to check the arguments early), the model-dependent default of gradient checkpointing is
    left off; `trackers` False leaves W&B and TensorBoard unconfigured."""
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = model is not None and checkpointing_by_default(machine.cuda, model_parameters(model))
    arguments = dict(
        output_dir=config.output_dir, learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps, per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, num_generations=config.group_size,
        num_generations_eval=resolved_eval_samples(config), max_completion_length=config.max_completion_length,
        temperature=config.temperature, top_p=config.top_p, beta=config.beta, loss_type=config.loss_type,
        seed=config.seed, bf16=machine.bf16, gradient_checkpointing=checkpointing,
        logging_steps=config.logging_steps, eval_strategy="steps" if evaluate else "no", eval_steps=config.eval_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        report_to=(configure_wandb(config) + (["tensorboard"] if config.tensorboard else [])) if trackers else [],
        dataloader_pin_memory=machine.cuda,
        use_cpu=not machine.cuda,  # also what lets several CPU processes train together over gloo
        ddp_find_unused_parameters=False,  # every trainable parameter takes part in each step's loss
        max_tool_calling_iterations=config.max_tool_calls,  # used only where the run has tools
        use_vllm=config.use_vllm, vllm_mode=config.vllm_mode,
        vllm_gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        fp16=machine.fp16,
    )
    pinned = same_on_every_backend(config)
    arguments.update({name: value for name, value in pinned.items() if name not in config.trl_options})
    try:
        args = trl.GRPOConfig(**arguments, **config.trl_options)
    except (ValueError, TypeError) as error:
        if not config.trl_options:
            raise
        raise UserError(f"trl_options {config.trl_options}: TRL refused them ({error})") from None
    for name, value in pinned.items():
        if name not in config.trl_options and getattr(args, name) != value:
            # Unsloth's config rewrites some options in its __init__ whatever it is given (Dr GRPO's scale_rewards).
            logger.info("TRL option %s: %r from %s, set back to %r (TRL's default) so that the run optimises the same "
                        "on every backend", name, getattr(args, name), type(args).__name__, value)
            setattr(args, name, value)
    return args


def options_refused(config: GRPOConfig, error: Exception, when: str) -> UserError | None:
    """A failure while TRL builds its trainer or takes its first step, when the run passed options of TRL's own: one
    line naming them, since such a value is the likeliest cause (TRL checks many only where it uses them). None when
    no option was passed: the failure is then the tool's, and keeps its traceback."""
    if not config.trl_options:
        return None
    return UserError(f"trl_options {config.trl_options}: TRL failed {when} with {type(error).__name__}: "
                     f"{str(error).strip().splitlines()[0][:300] if str(error).strip() else '(no message)'}; check "
                     "these values against https://huggingface.co/docs/trl/grpo_trainer")


def same_on_every_backend(config: GRPOConfig) -> dict:
    """The options Unsloth's config would otherwise change, with TRL's values (trl_options.SAME_ON_EVERY_BACKEND), and
    epsilon_high made explicit: TRL reads an unset one as epsilon, Unsloth's config as 0.28 after an explicit DAPO."""
    epsilon = config.trl_options.get("epsilon", trl_defaults()["epsilon"])
    return {**SAME_ON_EVERY_BACKEND, "epsilon_high": epsilon}


def trl_defaults() -> dict:
    """TRL's own GRPOConfig defaults: from TRL's class, also where Unsloth has put its subclass in its place."""
    own = next(cls for cls in trl.GRPOConfig.__mro__ if cls.__module__.startswith("trl."))
    return {field.name: field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            for field in dataclasses.fields(own)}


def effective_arguments(args) -> dict:
    """What the trainer received, read back from its built arguments (secrets masked by transformers), for the run
    record: two runs' records diff to what they optimised differently."""
    return json.loads(json.dumps(args.to_dict(), default=str))


def keep_trainable_weights_in_fp32(model) -> int:
    """TRL's trainer casts the trainable weights of a quantised model to bf16 (Unsloth's copy of it does not); with
    Adam at the usual learning rates most updates then round away. The LoRA weights go back to float32, which the
    optimizer, built later by train(), then keeps; autocast still computes in 16 bits. Returns how many were cast."""
    cast = 0
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype in (torch.bfloat16, torch.float16):
            parameter.data = parameter.data.float()
            cast += 1
    return cast
