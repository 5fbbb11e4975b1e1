"""The pass-through for options of TRL's own GRPOConfig that our config does not model (`trl_options`).

From the command line and from a config file (these examples are not Python):

    --trl-option scale_rewards=batch --trl-option mask_truncated_completions=true
    trl_options: {"epsilon_high": 0.28, "num_iterations": 2}

A name is checked against the fields TRL's GRPOConfig really has, read from TRL's and transformers' source files
rather than by importing them (importing trl costs seconds, and must wait until the backend is decided, because
Unsloth has to come first). TRL checks the values itself when the arguments are built.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from pathlib import Path

from errors import near_miss

# (package, file inside it, class) whose annotated fields make up TRL's GRPOConfig, base classes included.
TRL_CONFIG_SOURCES = (("trl", "trainer/grpo_config.py", "GRPOConfig"), ("trl", "trainer/base_config.py", None),
                      ("transformers", "training_args.py", "TrainingArguments"))

# Options whose defaults Unsloth's generated GRPOConfig changes (unsloth 2026.10.7, unsloth/models/rl.py: the
# `replacements` tables of its config, and its __init__'s rewrites when loss_type is given: DAPO's
# mask_truncated_completions, Dr GRPO's scale_rewards). The tool passes each with TRL's own default on every backend,
# and puts it back if Unsloth rewrote it, so that a setting the user did not choose means the same on a CPU and a GPU;
# trl_options still sets any of them. A test checks the values against the installed TRL's defaults.
SAME_ON_EVERY_BACKEND = {
    "optim": "adamw_torch_fused",  # Unsloth: adamw_8bit
    "weight_decay": 0.0,  # Unsloth: 0.001
    "warmup_steps": 0,  # Unsloth: 0.1, a 10% warm-up
    "eval_accumulation_steps": None,  # Unsloth: 2
    "torch_empty_cache_steps": None,  # Unsloth: 250
    "vllm_importance_sampling_correction": True,  # Unsloth: False
    "mask_truncated_completions": False,  # Unsloth: True when loss_type dapo is given (and the tool always gives it)
    "scale_rewards": "group",  # Unsloth: "none" when loss_type dr_grpo is given
    "logging_nan_inf_filter": True,  # Unsloth: False
}


def optimizer_name(options: dict) -> str:
    """The optimizer a run uses: trl_options' optim, else the one every backend is given."""
    return str(options.get("optim", SAME_ON_EVERY_BACKEND["optim"]))

# TRL options our own config sets: give our field instead, so the two can never disagree.
MODELLED = {
    "output_dir": "output_dir", "learning_rate": "learning_rate", "num_train_epochs": "num_train_epochs",
    "max_steps": "max_steps", "per_device_train_batch_size": "per_device_train_batch_size",
    "per_device_eval_batch_size": "per_device_eval_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps", "num_generations": "group_size",
    "num_generations_eval": "eval_group_size", "max_completion_length": "max_completion_length",
    "temperature": "temperature", "top_p": "top_p", "beta": "beta", "loss_type": "loss_type", "seed": "seed",
    "bf16": "bf16", "fp16": "bf16 (fp16 autocast is what a CUDA GPU without bf16 uses)",
    "gradient_checkpointing": "gradient_checkpointing", "logging_steps": "logging_steps",
    "eval_steps": "eval_steps", "save_steps": "save_steps", "save_total_limit": "save_total_limit",
    "report_to": "wandb_project / tensorboard", "use_vllm": "use_vllm", "vllm_mode": "vllm_mode",
    "vllm_gpu_memory_utilization": "vllm_gpu_memory_utilization", "reward_weights": "the reward config's weights",
    "resume_from_checkpoint": "resume_from_checkpoint", "trust_remote_code": "trust_remote_code",
    "eval_strategy": "eval_steps", "save_strategy": "save_steps", "use_cpu": "the machine (chosen for you)",
    "metric_for_best_model": "metric_for_best_model",
    "greater_is_better": "metric_for_best_model (lower wins for *nll, *drift and *loss)",
}


@functools.lru_cache(maxsize=1)
def trl_field_names() -> frozenset[str]:
    """The field names of the installed TRL's GRPOConfig (and the TrainingArguments it extends)."""
    names: set[str] = set()
    for package, relative, class_name in TRL_CONFIG_SOURCES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        tree = ast.parse(Path(spec.submodule_search_locations[0], relative).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and (class_name is None or node.name == class_name):
                names.update(statement.target.id for statement in node.body
                             if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name))
    return frozenset(names)


def trl_option_problems(options: dict) -> list[str]:
    problems = []
    known = trl_field_names()
    for name in options:
        if name in MODELLED:
            problems.append(f"trl_options: {name} is set by this tool's own setting {MODELLED[name]}; set that "
                            "instead")
        elif known and name not in known:
            problems.append(f"trl_options: TRL's GRPOConfig has no option {name!r}{near_miss(name, sorted(known))}; see "
                            "https://huggingface.co/docs/trl/grpo_trainer for the options it has")
    return problems


def parse_option(text: str) -> tuple[str, object]:
    """'KEY=VALUE' from the command line; the value is read as JSON (numbers, true/false, null, lists), else text."""
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise ValueError(f"{text!r}: give it as KEY=VALUE, e.g. scale_rewards=batch")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value
