"""The run configuration: one dataclass, its presets, and the single place where settings are layered and checked.

Settings are layered in one order, later layers winning: dataclass defaults < model and dataset presets <
mode (`--quick-test` / `--production`) < `--config` JSON file < flags the user gave.

    config = create_default_config("llama-3.1-8b", "ultrafeedback")
    save_config_to_file(config, "my_config.json")    # loads back with --config my_config.json
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from json_files import read_json_file, write_json_atomic
from errors import UserError
from rewards import REWARD_MODEL, Component, assemble_components, load_reward_config

CONFIG_DIR = Path(__file__).resolve().parent / "config"
TINY_MODEL = "tiny"
SAMPLE_DATASET = "sample"
HUB_DATASETS = {
    "ultrafeedback": "HuggingFaceH4/ultrafeedback_binarized",
    "ultrafeedback_large": "openbmb/UltraFeedback",
    "hh_rlhf": "Anthropic/hh-rlhf",
    "openai_summarize": "trl-lib/tldr-preference",
}
DATASET_NAMES = (*HUB_DATASETS, SAMPLE_DATASET)
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo")
PROMPT_FORMATS = ("auto", "chat", "text")
BACKENDS = ("auto", "unsloth", "transformers")


@dataclass
class GRPOConfig:
    # model
    model_name: str = "llama-3.1-8b"  # a preset (see MODEL_PRESETS), a Hugging Face model id, or a local directory
    backend: str = "auto"  # auto (Unsloth on a CUDA GPU when installed, else transformers + peft), unsloth, transformers
    trust_remote_code: bool = False  # run model code shipped with a hub checkpoint; only for checkpoints you trust
    max_seq_length: int = 2048  # tokens of prompt + completion; prompts longer than this minus the completion are dropped
    load_in_4bit: bool = True  # 4-bit weights (bitsandbytes) on a CUDA GPU; ignored on the CPU, which runs full precision
    use_lora: bool = True  # train a LoRA adapter (true) or every weight (false)
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 16  # LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)
    lora_dropout: float = 0.0  # dropout on the LoRA path, in [0, 1)
    lora_target_modules: str = "all-linear"  # all-linear, or comma-separated module names such as "q_proj,v_proj"
    bf16: bool | None = None  # bfloat16 compute; null: on for CUDA GPUs that support it, off on the CPU (where it is slower)
    gradient_checkpointing: bool | None = None  # null: on for CUDA and models of 100M+ parameters, off otherwise
    # data
    dataset_name: str = "ultrafeedback"  # ultrafeedback, ultrafeedback_large, hh_rlhf, openai_summarize, or sample
    custom_data: str | None = None  # a JSONL file of {"prompt", "chosen", "rejected"} rows; replaces dataset_name
    max_samples: int | None = None  # training prompts kept after conversion; null: all
    max_eval_samples: int = 100  # evaluation prompts kept; each evaluation generates for all of them
    streaming: bool = False  # read the training data while training runs instead of loading it first; needs max_steps
    prompt_format: str = "auto"  # auto (chat messages when the tokenizer has a chat template, else text), chat, text
    prompt_overflow: str = "drop"  # prompts over max_seq_length - max_completion_length tokens: drop or truncate
    # grpo
    learning_rate: float = 5e-6  # peak learning rate
    num_train_epochs: float = 1.0  # passes over the training prompts (ignored when max_steps > 0)
    max_steps: int = -1  # optimizer steps to run; -1: as many as num_train_epochs needs
    per_device_train_batch_size: int = 8  # completions (not prompts) per device per forward pass, as in TRL
    per_device_eval_batch_size: int = 8  # completions per device per evaluation batch
    gradient_accumulation_steps: int = 4  # forward passes per optimizer step
    group_size: int = 8  # completions sampled per prompt (TRL's num_generations); at least 2
    eval_group_size: int | None = None  # completions per prompt at evaluation; null: group_size if the eval batch allows
    max_completion_length: int = 256  # tokens generated per completion at most
    temperature: float = 1.0  # sampling temperature for completions, > 0
    top_p: float = 1.0  # nucleus sampling mass, in (0, 1]
    beta: float = 0.0  # KL coefficient against the reference model; 0 loads no reference model (TRL's default)
    gamma: float = 1.0  # discount over turns; every episode is one completion, so only 1.0 is meaningful
    loss_type: str = "dapo"  # TRL loss: grpo, dapo, dr_grpo, bnpo, cispo or sapo
    use_vllm: bool = False  # generate completions with vLLM (CUDA and the vllm package needed)
    vllm_mode: str = "colocate"  # colocate (vLLM shares the training GPU) or server (a `trl vllm-serve` process)
    vllm_gpu_memory_utilization: float = 0.3  # colocate: the share of GPU memory vLLM may take, in (0, 1)
    seed: int = 42  # seed for data order, sampling and weight initialisation
    # rewards
    reward_function_type: str = "single"  # single (one weighted reward) or multi (one TRL reward per component)
    reward_config_name: str = "balanced"  # a reward preset in config/rewards/
    reward_config_path: str | None = None  # a reward config JSON file; replaces reward_config_name
    reward_model: str | None = None  # a sequence-classification model (hub id, directory, or tiny) as a component
    reward_functions: list[str] = dataclasses.field(default_factory=list)  # custom rewards, each "path/to/file.py:function"
    # logging
    logging_steps: int = 10  # optimizer steps between metric logs
    eval_steps: int = 50  # optimizer steps between evaluations (each writes a generation log)
    save_steps: int = 100  # optimizer steps between checkpoints
    save_total_limit: int | None = 3  # checkpoints kept; null: all
    enable_generation_logging: bool = True  # write generation_log_step_{n}.json at each evaluation
    generation_log_dir: str | None = None  # where generation logs go; null: {output_dir}/generation_logs
    max_generation_samples: int = 5  # prompts per generation log
    wandb_project: str | None = None  # Weights & Biases project; null: W&B off
    tensorboard: bool = False  # also write TensorBoard event files under {output_dir}/runs/
    # output
    output_dir: str = "./grpo_outputs"  # checkpoints, final model, logs, effective config
    save_merged: bool = False  # also save LoRA merged into the base weights (16-bit), in final_model/merged
    resume_from_checkpoint: str | None = None  # a checkpoint directory to continue from, or "latest" in output_dir

    def __post_init__(self):
        # The original's example config says "systematic" for the per-component reward.
        if self.reward_function_type == "systematic":
            self.reward_function_type = "multi"

    @property
    def effective_generation_log_dir(self) -> str:
        return self.generation_log_dir or os.path.join(self.output_dir, "generation_logs")


FIELD_NAMES = tuple(field.name for field in dataclasses.fields(GRPOConfig))
FIELD_TYPES = typing.get_type_hints(GRPOConfig)

# Preset name -> the settings it changes. The four of the original run through Unsloth's pre-quantised checkpoints.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": {"model_name": "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"},
    "llama-3.1-70b": {"model_name": "unsloth/Meta-Llama-3.1-70B-Instruct-bnb-4bit", "group_size": 4,
                      "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4},
    "gemma-2-9b": {"model_name": "unsloth/gemma-2-9b-it-bnb-4bit"},
    "qwen2.5-7b": {"model_name": "unsloth/Qwen2.5-7B-Instruct-bnb-4bit"},
    # Built offline by tiny_model.py. A random ~100k-parameter model moves only with a large learning rate, and
    # full fine-tuning is cheaper than LoRA at this size.
    TINY_MODEL: {"model_name": TINY_MODEL, "max_seq_length": 256, "learning_rate": 3e-3, "use_lora": False,
                 "load_in_4bit": False, "max_completion_length": 32},
}
# Spellings that do not exist on the hub, mapped to the checkpoint they mean.
MODEL_ALIASES = {"unsloth/llama-3.1-8b-bnb-4bit": "unsloth/Meta-Llama-3.1-8B-bnb-4bit"}
# Billions of parameters of checkpoints we know, so a CPU machine can refuse them before any download.
MODEL_SIZES_BILLION = {
    "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit": 8, "unsloth/Meta-Llama-3.1-8B-bnb-4bit": 8,
    "unsloth/Meta-Llama-3.1-70B-Instruct-bnb-4bit": 70, "unsloth/gemma-2-9b-it-bnb-4bit": 9,
    "unsloth/Qwen2.5-7B-Instruct-bnb-4bit": 7,
}

DATASET_PRESETS: dict[str, dict[str, Any]] = {
    "openai_summarize": {"max_completion_length": 128},
}

MODE_PRESETS: dict[str, dict[str, Any]] = {
    # A smoke run well under a minute: short completions, three evaluations, one checkpoint. 60 steps is where the
    # tiny model's balanced reward has visibly risen (about 0.04 -> 0.1 on the sample data).
    "quick_test": {"max_samples": 200, "max_eval_samples": 8, "max_steps": 60, "logging_steps": 10, "eval_steps": 20,
                   "save_steps": 60, "max_completion_length": 32, "group_size": 4, "per_device_train_batch_size": 8,
                   "per_device_eval_batch_size": 8, "gradient_accumulation_steps": 1},
    # A real run: all the data, regular checkpoints and evaluations, W&B when it is installed.
    "production": {"max_samples": None, "max_eval_samples": 200, "logging_steps": 10, "eval_steps": 100,
                   "save_steps": 200, "save_total_limit": 3, "enable_generation_logging": True,
                   "wandb_project": "grpo-training"},
}


def resolve_model_name(model_name: str) -> str:
    """A preset key or an alias becomes the checkpoint it stands for; anything else is returned as given."""
    if model_name in MODEL_PRESETS:
        return MODEL_PRESETS[model_name]["model_name"]
    return MODEL_ALIASES.get(model_name, model_name)


def model_preset(model_name: str) -> dict[str, Any]:
    """The preset of a preset key or of its checkpoint name; empty for other models."""
    resolved = resolve_model_name(model_name)
    for key, preset in MODEL_PRESETS.items():
        if model_name == key or resolved == preset["model_name"]:
            return {field: value for field, value in preset.items() if field != "model_name"}
    return {}


def create_default_config(model: str = "llama-3.1-8b", dataset: str = "ultrafeedback") -> GRPOConfig:
    """Defaults with the model and dataset presets applied; model_name holds the checkpoint the preset stands for."""
    config = build_config(overrides={"model_name": model, "dataset_name": dataset})
    config.model_name = resolve_model_name(config.model_name)
    return config


def save_config_to_file(config: GRPOConfig, path: str | os.PathLike) -> None:
    write_json_atomic(path, dataclasses.asdict(config))


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a config JSON file, with unknown keys and wrong types reported together."""
    data = read_json_file(path, "config file")
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a JSON object of settings, got {type(data).__name__}")
    problems = [f"unknown key {key!r}" for key in data if key not in FIELD_NAMES]
    if problems:
        problems.append(f"valid keys: {', '.join(FIELD_NAMES)}")
    problems += [problem for key, value in data.items() if key in FIELD_NAMES
                 for problem in [type_problem(key, value)] if problem]
    if problems:
        raise UserError(f"config file {path}: " + "; ".join(problems))
    return data


def type_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot be the value of the field `name`, or None when it can."""
    expected = FIELD_TYPES[name]
    options = typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else (expected,)
    if typing.get_origin(expected) is list:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return None
        return f"{name}={value!r} must be a list of strings"
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return None
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if option is str and isinstance(value, str):
            return None
    names = " or ".join("null" if option is type(None) else option.__name__ for option in options)
    return f"{name}={value!r} must be {names}"


def build_config(mode: str | None = None, config_file: str | None = None,
                 overrides: dict[str, Any] | None = None) -> GRPOConfig:
    """Layer defaults, presets, mode, config file and explicit overrides, then check the result as a whole."""
    overrides = dict(overrides or {})
    file_settings = load_config_file(config_file) if config_file else {}
    mode_settings = dict(MODE_PRESETS[mode]) if mode else {}
    chosen = {**file_settings, **overrides}
    if mode == "quick_test":
        # With nothing named, the smoke test runs offline: the tiny model on the bundled sample data.
        if "model_name" not in chosen:
            mode_settings["model_name"] = TINY_MODEL
        if "dataset_name" not in chosen and not chosen.get("custom_data"):
            mode_settings["dataset_name"] = SAMPLE_DATASET
    model_name = chosen.get("model_name", mode_settings.get("model_name", GRPOConfig.model_name))
    dataset_name = chosen.get("dataset_name", mode_settings.get("dataset_name", GRPOConfig.dataset_name))
    settings: dict[str, Any] = {}
    for layer in (model_preset(model_name) if isinstance(model_name, str) else {},
                  DATASET_PRESETS.get(dataset_name, {}), mode_settings, file_settings, overrides):
        settings.update(layer)
    problems = [problem for key, value in overrides.items() for problem in [type_problem(key, value)] if problem]
    if problems:
        raise UserError("; ".join(problems))
    config = GRPOConfig(**settings)
    validate_config(config)
    return config


def world_size() -> int:
    """Processes in this run, as `accelerate launch` / torchrun announce them."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """Whether this is the process that writes files and narrates (rank 0, or the only one)."""
    return os.environ.get("RANK", "0") == "0"


def compatible_values(step: int, count: int = 3) -> str:
    return ", ".join(str(step * k) for k in range(1, count + 1))


def resolved_eval_group_size(config: GRPOConfig) -> int:
    """Completions per prompt at evaluation.

    Unset, it is group_size when the global eval batch holds whole groups, else the largest group size up to
    group_size that fits (the original's example config pairs an eval batch of 2 with a group of 4).
    """
    if config.eval_group_size is not None:
        return config.eval_group_size
    global_batch = config.per_device_eval_batch_size * world_size()
    return max(size for size in range(1, max(1, config.group_size) + 1) if global_batch % size == 0)


def model_name_problem(model_name: str) -> str | None:
    if model_name in MODEL_PRESETS or model_name in MODEL_ALIASES or Path(model_name).is_dir():
        return None
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model_name):
        return None
    if os.sep in model_name or model_name.startswith("."):
        return f"model {model_name!r}: no such directory"
    return (f"unknown model {model_name!r}: use a preset ({', '.join(MODEL_PRESETS)}), a Hugging Face id such as "
            "'Qwen/Qwen2.5-0.5B-Instruct', or a local model directory")


def validate_config(config: GRPOConfig) -> None:
    """Check every field and the combinations TRL would reject later; report all problems in one message."""
    problems = [problem for field in FIELD_NAMES for problem in [type_problem(field, getattr(config, field))] if problem]
    if problems:
        raise UserError("; ".join(problems))

    def require(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    model_problem = model_name_problem(config.model_name)
    require(model_problem is None, model_problem or "")
    if config.custom_data is None:
        require(config.dataset_name in DATASET_NAMES,
                f"unknown dataset {config.dataset_name!r}: use one of {', '.join(DATASET_NAMES)}, or --custom-data PATH")
    else:
        require(Path(config.custom_data).is_file(),
                f"custom data {config.custom_data}: no such file (give a .jsonl, .json or .parquet file)")
    for field in ("max_seq_length", "per_device_train_batch_size", "per_device_eval_batch_size",
                  "gradient_accumulation_steps", "max_completion_length", "logging_steps", "eval_steps",
                  "save_steps", "lora_r", "lora_alpha", "max_eval_samples"):
        require(getattr(config, field) > 0, f"{field}={getattr(config, field)} must be at least 1")
    for field in ("max_samples", "save_total_limit"):
        value = getattr(config, field)
        require(value is None or value > 0, f"{field}={value} must be at least 1, or null for no limit")
    require(config.max_generation_samples >= 0, f"max_generation_samples={config.max_generation_samples} must be >= 0")
    require(0 < config.learning_rate < 1, f"learning_rate={config.learning_rate} must be between 0 and 1 "
                                          "(GRPO runs typically use 1e-6 to 1e-5 with LoRA)")
    require(config.num_train_epochs > 0, f"num_train_epochs={config.num_train_epochs} must be above 0")
    require(config.max_steps == -1 or config.max_steps > 0, f"max_steps={config.max_steps} must be -1 or at least 1")
    require(config.temperature > 0, f"temperature={config.temperature} must be above 0")
    require(0 < config.top_p <= 1, f"top_p={config.top_p} must be in (0, 1]")
    require(config.beta >= 0 and math.isfinite(config.beta), f"beta={config.beta} must be a number >= 0")
    require(config.gamma == 1.0, f"gamma={config.gamma}: every episode is a single completion, so only 1.0 is "
                                 "meaningful; set gamma to 1.0")
    require(0 <= config.lora_dropout < 1, f"lora_dropout={config.lora_dropout} must be in [0, 1)")
    require(config.prompt_format in PROMPT_FORMATS,
            f"prompt_format={config.prompt_format!r}: use one of {', '.join(PROMPT_FORMATS)}")
    require(config.prompt_overflow in ("drop", "truncate"),
            f"prompt_overflow={config.prompt_overflow!r}: use 'drop' or 'truncate'")
    require(not config.streaming or config.max_steps > 0,
            "streaming=true needs max_steps: a stream's length is unknown, so the run needs a step count")
    require(config.backend in BACKENDS, f"backend={config.backend!r}: use one of {', '.join(BACKENDS)}")
    require(config.vllm_mode in ("colocate", "server"), f"vllm_mode={config.vllm_mode!r}: use colocate or server")
    require(0 < config.vllm_gpu_memory_utilization < 1,
            f"vllm_gpu_memory_utilization={config.vllm_gpu_memory_utilization} must be between 0 and 1")
    require(bool(config.lora_target_modules.strip()),
            "lora_target_modules is empty: use all-linear or module names such as q_proj,v_proj")
    require(config.loss_type in LOSS_TYPES, f"loss_type={config.loss_type!r}: use one of {', '.join(LOSS_TYPES)}")
    require(config.reward_function_type in ("single", "multi"),
            f"reward_function_type={config.reward_function_type!r}: use 'single' or 'multi'")
    require(config.max_completion_length < config.max_seq_length,
            f"max_completion_length={config.max_completion_length} leaves no room for a prompt in "
            f"max_seq_length={config.max_seq_length}: raise max_seq_length or lower max_completion_length")
    try:
        # Loading the reward config and the custom reward files here reports their mistakes before anything heavy.
        reward_config = load_reward_config(config.reward_config_path or config.reward_config_name)
        # The reward model itself loads later; here it only counts with its weight.
        reward_model = (Component(REWARD_MODEL, lambda completions, **kwargs: [], reward_config["reward_model_weight"])
                        if config.reward_model else None)
        assemble_components(reward_config, config.reward_functions, reward_model)
    except UserError as error:
        problems.append(str(error))
    if config.reward_model not in (None, TINY_MODEL):
        require(model_name_problem(config.reward_model) is None,
                f"reward model {config.reward_model!r}: give a Hugging Face id, a local directory, or tiny")
    if config.resume_from_checkpoint not in (None, "latest"):
        require(Path(config.resume_from_checkpoint).is_dir(),
                f"checkpoint {config.resume_from_checkpoint}: no such directory (give a checkpoint-N directory "
                "from an earlier run's output dir, or 'latest')")

    if config.group_size < 2:
        problems.append(f"group_size={config.group_size}: GRPO compares completions within a group, so it needs at "
                        "least 2")
    else:
        processes = world_size()
        per_step = processes * config.gradient_accumulation_steps
        generation_batch = config.per_device_train_batch_size * per_step
        if generation_batch % config.group_size:
            step = config.group_size // math.gcd(config.group_size, per_step)
            problems.append(
                f"per_device_train_batch_size={config.per_device_train_batch_size} with "
                f"gradient_accumulation_steps={config.gradient_accumulation_steps} on {processes} process(es) "
                f"samples {generation_batch} completions per generation, which group_size={config.group_size} "
                f"does not divide: use a batch size of {compatible_values(step)}, or a group_size that divides "
                f"{generation_batch}")
        eval_group = resolved_eval_group_size(config)
        eval_batch = config.per_device_eval_batch_size * processes
        if eval_group < 2 and config.eval_group_size is not None:
            problems.append(f"eval_group_size={eval_group} must be at least 2, or null")
        elif eval_batch % eval_group:
            step = eval_group // math.gcd(eval_group, processes)
            problems.append(
                f"per_device_eval_batch_size={config.per_device_eval_batch_size} on {processes} process(es) is not "
                f"a multiple of eval_group_size={eval_group}: use {compatible_values(step)}")
    if problems:
        raise UserError("; ".join(problems))
