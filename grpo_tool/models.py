"""Loading and saving models on the chosen backend: the policy (with its LoRA adapter), the reward model, and the
merged export. Heavy: imported only after backend.prepare (see grpo_tool/__init__.py).

    from grpo_tool.backend import prepare
    config = GRPOConfig(model_name="tiny")
    model, tokenizer, source = load_policy(config, prepare(config))
    assert isinstance(model, PeftModel) and model.peft_config["default"].r == config.lora_r    # a fresh LoRA adapter
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
)
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

from grpo_tool import tools
from grpo_tool.backend import Machine
from grpo_tool.checkpoints import replace_directory
from grpo_tool.components import REWARD_MODEL, Component
from grpo_tool.errors import UserError
from grpo_tool.gguf_models import converted_gguf
from grpo_tool.launch import launcher_says
from grpo_tool.model_registry import TINY_MODEL, architecture_problem, checkpoint_to_load, find_gguf
from grpo_tool.scoring import make_reward_model_reward
from grpo_tool.settings import GRPOConfig

logger = logging.getLogger(__name__)

# Errors a loader raises for a model it cannot load (a missing file, a bad config, a model type or combination the
# backend does not support, a timeout); each becomes one error line. CUDA running out of memory is a RuntimeError too.
# What loading a model raises for files that are not what they seem: a cut-off safetensors file (SafetensorError), a
# cut-off GGUF header (struct.error), besides the usual missing, malformed or unsupported ones.
LOAD_ERRORS = (OSError, ValueError, RuntimeError, NotImplementedError, TimeoutError, struct.error, SafetensorError)


def linear_layer_names(model) -> list[str]:
    """The names of a model's linear layers inside its blocks (4-bit ones included), the output head left out."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and "." in name and "lm_head" not in name})


def lora_targets(config: GRPOConfig, model=None):
    """LoRA target modules as peft and Unsloth take them: the names given, or all-linear, which Unsloth is given as
    the model's own linear layer names (its models differ: q_proj/k_proj/v_proj or qkv_proj, gate_up_proj, ...)."""
    if config.lora_target_modules.strip() == "all-linear":
        return linear_layer_names(model) if model is not None else "all-linear"
    return [name.strip() for name in config.lora_target_modules.split(",") if name.strip()]


def model_parameters(model) -> int:
    """Parameters as the model's shape counts them: a 4-bit weight packs two values a byte, and says its true shape."""
    total = 0
    for parameter in model.parameters():
        state = getattr(parameter, "quant_state", None)
        if state is not None and hasattr(state, "shape"):
            total += state.shape.numel()
        else:  # under ZeRO-3 a process holds a share of each weight; ds_numel is the whole
            total += getattr(parameter, "ds_numel", parameter.numel())
    return total


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
        from grpo_tool.tiny_model import ensure_tiny_model  # builds the tiny model on first use

        return str(ensure_tiny_model())
    if gguf := find_gguf(config.model_name):
        return str(converted_gguf(gguf))
    return checkpoint_to_load(config.model_name, config.four_bit)


FSDP_SHARDS = "pytorch_model_fsdp_0"  # accelerate's folder of a sharded FSDP model state
WHOLE_MODEL_FILES = ("config.json", "adapter_config.json")


def load_policy(config: GRPOConfig, machine: Machine, path: str | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, source): the configured model with a fresh LoRA adapter when LoRA is on, or a saved model /
    checkpoint / adapter directory at `path` as it is."""
    source = path or model_location(config)
    if path and Path(path, FSDP_SHARDS).is_dir() and not any(Path(path, name).is_file() for name in WHOLE_MODEL_FILES):
        raise UserError(f"{path} is an FSDP checkpoint saved sharded (fsdp_state_dict_type: SHARDED_STATE_DICT): it "
                        "holds no whole model to load here; evaluate the run's final_model, or train with "
                        "FULL_STATE_DICT (config/accelerate/fsdp.yaml) to have whole checkpoints")
    # The chat template (chat_template, and what tool calls need) is settled before the weights load where the
    # tokenizer loads apart from them; Unsloth loads both in one call.
    if machine.backend == "unsloth":
        model, tokenizer = load_with_unsloth(config, machine, source, fresh=path is None)
        tools.prepare_tokenizer(tokenizer, config, config.model_name)
    else:
        tokenizer = load_tokenizer(source, config.trust_remote_code)
        tools.prepare_tokenizer(tokenizer, config, config.model_name)
        with sharded_loading(machine):
            model = load_with_transformers(config, machine, source, fresh=path is None)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    partitioned = any(hasattr(p, "ds_id") for p in model.parameters())
    logger.info("model: %s (%s parameters, %s trainable%s)", source, f"{model_parameters(model):,}", f"{trainable:,}",
                ", each process holding its share of every weight since the load (ZeRO-3)" if partitioned else "")
    return model, tokenizer, source


@contextlib.contextmanager
def sharded_loading(machine: Machine):
    """The policy's load under an engine that shards its weights, so that a model larger than one device never
    has to fit on one:
    - DeepSpeed ZeRO-3 with zero3_init_flag (accelerate launch's ACCELERATE_DEEPSPEED_ZERO3_INIT): inside
      deepspeed.zero.Init, each process keeping its share of every weight as it is read. transformers does this for
      every model loaded once TRL's arguments exist (they hold accelerate's DeepSpeedPlugin); the policy loads before
      them, so the same plugin is set up here for the time of the load.
    - FSDP with fsdp_cpu_ram_efficient_loading: the processes' group started first, so that transformers reads the
      weights on each machine's first process only and FSDP hands them out when it shards the model.
    Without either, the weights load whole (load_causal_lm leaves them in CPU memory under ZeRO-3 and FSDP)."""
    if machine.backend != "transformers" or is_deepspeed_zero3_enabled():
        yield
        return
    if launcher_says("ACCELERATE_USE_FSDP") and launcher_says("FSDP_CPU_RAM_EFFICIENT_LOADING"):
        from accelerate import PartialState

        PartialState(cpu=not machine.cuda)  # the group TRL's arguments would start, started now
        yield
        return
    plugin = None
    if launcher_says("ACCELERATE_DEEPSPEED_ZERO3_INIT"):
        from accelerate.utils import DeepSpeedPlugin

        plugin = DeepSpeedPlugin()
    if plugin is None or plugin.zero_stage != 3:
        yield
        return
    deepspeed_comm_on_cpu(machine)
    plugin.set_mixed_precision("bf16" if machine.bf16 else "fp16" if machine.cuda else "no")
    plugin.set_deepspeed_weakref()  # transformers reads it through a weak reference: `plugin` keeps it alive
    try:
        yield
    finally:
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


def deepspeed_comm_on_cpu(machine: Machine) -> bool:
    """Under DeepSpeed without CUDA, start deepspeed.comm over gloo (on the launcher's MASTER_ADDR and PORT, which
    torch.distributed and accelerate then share); True if it did. TrainingArguments' use_cpu makes accelerate's
    PartialState set up torch.distributed alone (it starts deepspeed.comm only when not cpu), and deepspeed.zero.Init,
    which from_pretrained enters under ZeRO-3 (the policy, TRL's reference model, the base copy), would size its
    config for one process and fail "train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step *
    world_size". On a GPU, zero.Init starts deepspeed.comm itself (NCCL)."""
    if machine.cuda or not launcher_says("ACCELERATE_USE_DEEPSPEED"):
        return False
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    return True


def load_tokenizer(source: str, trust_remote_code: bool):
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as error:
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
    return add_lora(config, model) if fresh and config.use_lora else model


def load_causal_lm(config: GRPOConfig, machine: Machine, source: str, quantize: bool | None = None):
    options: dict[str, Any] = {"dtype": getattr(torch, machine.weights_dtype)}
    sharded = is_deepspeed_zero3_enabled() or launcher_says("ACCELERATE_USE_FSDP")
    if machine.cuda and not sharded:
        # Under ZeRO-3 transformers loads inside deepspeed.zero.Init and refuses a device_map ("DeepSpeed Zero-3 is
        # not compatible with passing a `device_map`"); under FSDP the weights stay in CPU memory until FSDP moves
        # each process's shard to its GPU, instead of every process putting the whole model on its GPU first.
        options["device_map"] = machine.device_map
        if config.four_bit if quantize is None else quantize:
            options["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=options["dtype"])
    try:
        return AutoModelForCausalLM.from_pretrained(source, trust_remote_code=config.trust_remote_code, **options)
    except LOAD_ERRORS as error:
        raise load_failure(source, error) from None


def load_base_copy(config: GRPOConfig, machine: Machine):
    """The starting weights, frozen and in eval mode: the base model of the base-model measure (grpo_tool/base_view.py)
    when full fine-tuning has no reference model."""
    model = load_causal_lm(config, machine, model_location(config), quantize=False)
    model.eval()
    model.requires_grad_(False)
    return model


def add_lora(config: GRPOConfig, model):
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=lora_targets(config), task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as error:
        raise lora_target_failure(config, model, error) from None


def lora_target_failure(config: GRPOConfig, model, error: Exception) -> UserError:
    return UserError(f"--lora-target-modules {config.lora_target_modules}: {str(error).splitlines()[0]}; this "
                     f"model's linear layers are {', '.join(linear_layer_names(model))} (or give all-linear)")


def load_with_unsloth(config: GRPOConfig, machine: Machine, source: str, fresh: bool):
    from unsloth import FastLanguageModel  # already imported by backend.prepare; here for its loader

    try:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=source, max_seq_length=config.max_seq_length, load_in_4bit=config.four_bit,
            full_finetuning=not config.use_lora, max_lora_rank=config.lora_r,
            # Unsloth's in-process vLLM engine is the colocated mode; with it on, its trainer forces colocate, so a
            # run that asked for a vLLM server keeps TRL's client and starts no engine here.
            fast_inference=config.use_vllm and config.vllm_mode == "colocate",
            gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            # The one precision rule (backend.precision): left to itself, Unsloth picks bf16 whatever --bf16 says.
            dtype=getattr(torch, machine.weights_dtype), trust_remote_code=config.trust_remote_code)
    except LOAD_ERRORS as error:
        raise load_failure(source, error) from None
    if fresh and config.use_lora:
        checkpointing = config.gradient_checkpointing is not False
        try:
            model = FastLanguageModel.get_peft_model(
                model, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                target_modules=lora_targets(config, model),
                use_gradient_checkpointing="unsloth" if checkpointing else False, random_state=config.seed)
        except (ValueError, RuntimeError, NotImplementedError) as error:
            raise lora_target_failure(config, model, error) from None
    ensure_pad_token(tokenizer)
    return model, tokenizer


def load_reward_model(config: GRPOConfig, machine: Machine, weight: float) -> Component:
    """The --reward-model as a reward component, scored by rewards.make_reward_model_reward."""
    name = config.reward_model
    if name == TINY_MODEL:
        from grpo_tool.tiny_model import ensure_tiny_reward_model  # builds the tiny reward model on first use

        name = str(ensure_tiny_reward_model())
    try:
        model_config = AutoConfig.from_pretrained(name, trust_remote_code=config.trust_remote_code)
    except LOAD_ERRORS as error:
        raise load_failure(name, error, "reward model") from None
    if problem := architecture_problem(model_config.to_dict(), "reward model", config.reward_model):
        raise UserError(problem)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=config.trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=1, dtype=getattr(torch, machine.compute_dtype),
            trust_remote_code=config.trust_remote_code, device_map=machine.device_map)
    except LOAD_ERRORS as error:
        raise load_failure(name, error, "reward model") from None
    ensure_pad_token(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval().requires_grad_(False)
    logger.info("reward model: %s (weight %s)", name, weight)
    return Component(REWARD_MODEL, make_reward_model_reward(model, tokenizer), weight)


def pre_quantized(source: str) -> bool:
    """Whether a model directory or cached hub checkpoint holds quantised weights (its config says so)."""
    try:
        return getattr(AutoConfig.from_pretrained(source), "quantization_config", None) is not None
    except LOAD_ERRORS:
        return False


def save_merged(config: GRPOConfig, machine: Machine, tokenizer, adapter_dir: Path, target: Path) -> Path | None:
    """The LoRA adapter in `adapter_dir` merged into its base weights, saved as a plain 16-bit checkpoint that any
    transformers code loads, written beside `target` and renamed into place.

    The same on every backend: transformers loads the base afresh from where the run loaded it (nothing is
    downloaded), as the run loaded it, in the run's 16-bit compute dtype. Weights the run trained on in 4 bits
    (pre-quantised, or quantised at load) are dequantised first, so the adapter is merged into the very weights it
    was trained against and never re-quantised, and the merged model answers as the trained one did. Unsloth's own
    merged export would instead fetch the original 16-bit checkpoint, which fails offline or for a local 4-bit base.
    """
    if not config.use_lora:
        logger.info("save_merged: the model was trained in full, so %s already holds merged weights", adapter_dir)
        return None
    base_name = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    four_bit = machine.cuda and (config.four_bit or pre_quantized(base_name))
    base = load_causal_lm(config, replace(machine, weights_dtype=machine.compute_dtype), base_name, quantize=four_bit)
    if getattr(base, "hf_quantizer", None) is not None:
        base = base.dequantize(dtype=getattr(torch, machine.compute_dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    replace_directory(staging, target)
    logger.info("merged %s model saved to %s%s", machine.compute_dtype, target,
                " (the adapter merged into the dequantised 4-bit weights it was trained on)" if four_bit else "")
    return target
