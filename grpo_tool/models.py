"""Loading and saving models on the chosen backend: the policy (with its LoRA adapter), the reward model, and the
merged export. Heavy: imported only after backend.prepare (see grpo_tool/__init__.py).

    from grpo_tool.backend import prepare
    config = GRPOConfig(model_name="tiny")
    model, tokenizer, source = load_policy(config, prepare(config))
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          BitsAndBytesConfig)

from config import GRPOConfig
from errors import UserError
from grpo_tool.backend import Machine
from grpo_tool.gguf_models import converted_gguf
from grpo_tool.model_registry import TINY_MODEL, find_gguf, resolve_model_name
from rewards import REWARD_MODEL, Component, make_reward_model_reward

logger = logging.getLogger(__name__)

# Unsloth wants LoRA targets by name; these are the linear layers of the Llama, Qwen and Gemma families.
UNSLOTH_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_targets(config: GRPOConfig, backend: str):
    """LoRA target modules as peft / Unsloth take them."""
    if config.lora_target_modules.strip() == "all-linear":
        return UNSLOTH_ALL_LINEAR if backend == "unsloth" else "all-linear"
    return [name.strip() for name in config.lora_target_modules.split(",") if name.strip()]


def model_parameters(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def load_failure(source: str, error: Exception, what: str = "model") -> UserError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserError(f"{what} {source}: cannot be loaded ({first_line}). Without network access, use a model already "
                     "in the Hugging Face cache, a local model directory, or --model tiny")


def ensure_pad_token(tokenizer) -> None:
    """The pad policy: a tokenizer without a pad token pads with its end-of-sequence token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def model_location(config: GRPOConfig) -> str:
    """Where the configured model loads from: the tiny model's cache, a GGUF file's converted copy, or the name."""
    if config.model_name == TINY_MODEL:
        from tiny_model import ensure_tiny_model  # builds the tiny model on first use

        return str(ensure_tiny_model())
    if gguf := find_gguf(config.model_name):
        return str(converted_gguf(gguf))
    return resolve_model_name(config.model_name)


def load_policy(config: GRPOConfig, machine: Machine, path: str | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, source): the configured model with a fresh LoRA adapter when LoRA is on, or a saved model /
    checkpoint / adapter directory at `path` as it is."""
    source = path or model_location(config)
    if machine.backend == "unsloth":
        model, tokenizer = load_with_unsloth(config, source, fresh=path is None)
    else:
        tokenizer = load_tokenizer(source, config.trust_remote_code)
        model = load_with_transformers(config, machine, source, fresh=path is None)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("model: %s (%s parameters, %s trainable)", source, f"{model_parameters(model):,}", f"{trainable:,}")
    return model, tokenizer, source


def load_tokenizer(source: str, trust_remote_code: bool):
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise load_failure(source, error) from None
    ensure_pad_token(tokenizer)
    return tokenizer


def load_with_transformers(config: GRPOConfig, machine: Machine, source: str, fresh: bool):
    adapter = Path(source, "adapter_config.json")
    if adapter.is_file():
        base = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
        return PeftModel.from_pretrained(load_causal_lm(config, machine, base), source, is_trainable=True)
    model = load_causal_lm(config, machine, source)
    # A saved model given by path is evaluated as it is; a fresh adapter goes only on a base model.
    return add_lora(config, machine, model) if fresh and config.use_lora else model


def load_causal_lm(config: GRPOConfig, machine: Machine, source: str, quantize: bool | None = None):
    options: dict[str, Any] = {"dtype": getattr(torch, machine.weights_dtype)}
    if machine.cuda:
        options["device_map"] = machine.device_map
        if config.load_in_4bit if quantize is None else quantize:
            options["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=options["dtype"])
    try:
        return AutoModelForCausalLM.from_pretrained(source, trust_remote_code=config.trust_remote_code, **options)
    except (OSError, ValueError) as error:
        raise load_failure(source, error) from None


def load_base_copy(config: GRPOConfig, machine: Machine):
    """The starting weights, frozen and in eval mode: the base model of the base-model measure (grpo_tool/base_view.py)
    when full fine-tuning has no reference model."""
    model = load_causal_lm(config, machine, model_location(config), quantize=False)
    model.eval()
    model.requires_grad_(False)
    return model


def add_lora(config: GRPOConfig, machine: Machine, model):
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=lora_targets(config, machine.backend), task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as error:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear) and "." in name})
        raise UserError(f"--lora-target-modules {config.lora_target_modules}: {str(error).splitlines()[0]}; this "
                        f"model's linear layers are {', '.join(linear)} (or give all-linear)") from None


def load_with_unsloth(config: GRPOConfig, source: str, fresh: bool):
    from unsloth import FastLanguageModel  # already imported by backend.prepare; here for its loader

    try:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=source, max_seq_length=config.max_seq_length, load_in_4bit=config.load_in_4bit,
            full_finetuning=not config.use_lora, fast_inference=config.use_vllm, max_lora_rank=config.lora_r,
            gpu_memory_utilization=config.vllm_gpu_memory_utilization, dtype=None,
            trust_remote_code=config.trust_remote_code)
    except OSError as error:
        raise load_failure(source, error) from None
    if fresh and config.use_lora:
        checkpointing = config.gradient_checkpointing is not False
        model = FastLanguageModel.get_peft_model(
            model, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=lora_targets(config, "unsloth"),
            use_gradient_checkpointing="unsloth" if checkpointing else False, random_state=config.seed)
    ensure_pad_token(tokenizer)
    return model, tokenizer


def load_reward_model(config: GRPOConfig, machine: Machine, weight: float) -> Component:
    """The --reward-model as a reward component, scored by rewards.make_reward_model_reward."""
    name = config.reward_model
    if name == TINY_MODEL:
        from tiny_model import ensure_tiny_reward_model  # builds the tiny reward model on first use

        name = str(ensure_tiny_reward_model())
    try:
        architectures = AutoConfig.from_pretrained(name, trust_remote_code=config.trust_remote_code).architectures
    except (OSError, ValueError) as error:
        raise load_failure(name, error, "reward model") from None
    if architectures and not any(arch.endswith("ForSequenceClassification") for arch in architectures):
        raise UserError(f"reward model {config.reward_model} is a {architectures[0]}, not a sequence-classification "
                        "model: its score head would be random. Give a reward model (e.g. one trained with TRL's "
                        "RewardTrainer)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=config.trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=1, dtype=getattr(torch, machine.weights_dtype),
            trust_remote_code=config.trust_remote_code, device_map=machine.device_map)
    except (OSError, ValueError) as error:
        raise load_failure(name, error, "reward model") from None
    ensure_pad_token(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval().requires_grad_(False)
    logger.info("reward model: %s (weight %s)", name, weight)
    return Component(REWARD_MODEL, make_reward_model_reward(model, tokenizer), weight)


def save_merged(config: GRPOConfig, machine: Machine, model, tokenizer, adapter_dir: Path, target: Path) -> Path | None:
    """The LoRA adapter merged into 16-bit base weights: a plain checkpoint any transformers code loads."""
    if not config.use_lora:
        logger.info("save_merged: the model was trained in full, so %s already holds merged weights", adapter_dir)
        return None
    if machine.backend == "unsloth":
        model.save_pretrained_merged(str(target), tokenizer, save_method="merged_16bit")
    else:
        # The base is loaded afresh unquantised (never merged into 4-bit weights, which would round the update).
        base_name = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = load_causal_lm(config, machine, base_name, quantize=False)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(target)
        tokenizer.save_pretrained(target)
    logger.info("merged 16-bit model saved to %s", target)
    return target
