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
import math
import re
from pathlib import Path

from grpo_tool.errors import near_miss

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
    "num_generations_eval": "eval_samples", "max_completion_length": "max_completion_length",
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


# Values TRL takes when its arguments are built and fails on later (at the first step, in generation) or that train
# nothing: checked with the others, before any model loads. (lowest, highest, whether the lowest itself is allowed)
RANGES = {
    "num_iterations": (1, None, True), "steps_per_generation": (1, None, True),
    "generation_batch_size": (1, None, True), "top_k": (0, None, True), "min_p": (0, 1, True),
    "repetition_penalty": (0, None, False), "epsilon": (0, None, True), "epsilon_high": (0, None, True),
    "delta": (0, None, False), "max_grad_norm": (0, None, True), "warmup_steps": (0, None, True),
    "weight_decay": (0, None, True), "adam_beta1": (0, 1, True),
    "adam_beta2": (0, 1, True), "adam_epsilon": (0, None, False), "top_entropy_quantile": (0, 1, True),
    "ref_model_mixup_alpha": (0, 1, True), "ref_model_sync_steps": (1, None, True),
    "num_completions_to_print": (0, None, True), "dataloader_num_workers": (0, None, True),
}
# TRL's text options with a fixed set of values that it checks only when a step uses them (trl 1.14.2,
# trl/trainer/grpo_trainer.py), and the booleans its config maps onto them.
CHOICES = {
    "scale_rewards": ("group", "batch", "none", True, False),
    "importance_sampling_level": ("token", "sequence"),
    "multi_objective_aggregation": ("sum_then_normalize", "normalize_then_sum"),
    "vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
}
PYTHON_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,),
                "list": (list,), "None": (type(None),)}


# TRL's words (its GRPOConfig, ModelConfig and script arguments) for settings of ours, read as ours in a config file
# and as flags, so that a TRL recipe's settings work as written. TRL's names equal to ours need nothing.
TRL_ALIASES = {"num_generations": "group_size", "num_generations_eval": "eval_samples",
               "model_name_or_path": "model_name", "use_peft": "use_lora",
               "reward_model_name_or_path": "reward_model"}
# Our own settings' earlier names: a config file or a flag that still says them is told the new one.
RENAMED = {"eval_group_size": "eval_samples"}
# TRL's words for something this tool sets another way: what to use instead.
TRL_INSTEAD = {
    "max_prompt_length": "max_seq_length (a prompt may take max_seq_length - max_completion_length tokens; "
                         "prompt_overflow says whether longer ones are dropped or truncated)",
    "dtype": "bf16", "torch_dtype": "bf16", "dataset_train_split": "custom_data (a file of the training rows)",
    "dataset_test_split": "max_eval_samples (a preset knows its evaluation split; a file's is held out)",
    "dataset_config": "dataset_name (a preset knows its configuration) or custom_data",
    "reward_funcs": "reward_functions (--reward-fn FILE.py:NAME or package.module:NAME)",
    **{name: phrase for name, phrase in MODELLED.items() if phrase != name and name not in TRL_ALIASES},
}


def trl_word_problem(name: str, spelled: str | None = None) -> str | None:
    """What to use for TRL's setting `name` that is not an alias (spelled as the user spelled it), or None when it
    is not a TRL word at all."""
    spelled = spelled or name
    if name in RENAMED:
        return f"{spelled} was renamed {RENAMED[name]} (--{RENAMED[name].replace('_', '-')})"
    if name in TRL_INSTEAD:
        return f"{spelled} is TRL's setting; here use {TRL_INSTEAD[name]}"
    if name in trl_field_names() and name not in MODELLED:
        return (f"{spelled} is an option of TRL's own GRPOConfig that this config does not model: give it under "
                f"trl_options (--trl-option {name}=VALUE)")
    return None


def setting_name(trl_name: str) -> str:
    """How the user sets TRL's option `trl_name` here: our own setting when it is modelled, else the pass-through."""
    return MODELLED.get(trl_name, f"trl_options.{trl_name}").split(" ")[0]


@functools.lru_cache(maxsize=1)
def trl_field_types() -> dict[str, str]:
    """Each field of the installed TRL's GRPOConfig (and the TrainingArguments it extends), with its annotation as
    written there."""
    fields: dict[str, str] = {}
    for package, relative, class_name in TRL_CONFIG_SOURCES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        tree = ast.parse(Path(spec.submodule_search_locations[0], relative).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and (class_name is None or node.name == class_name):
                for statement in node.body:
                    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                        fields.setdefault(statement.target.id, ast.unparse(statement.annotation))
    return fields


def trl_field_names() -> frozenset[str]:
    return frozenset(trl_field_types())


def accepted_types(annotation: str) -> tuple[type, ...] | None:
    """The Python types an annotation such as `int | None` or `Optional[float]` admits; None when it admits anything
    or is not a plain one (TRL checks those itself)."""
    words = re.findall(r"[A-Za-z_]+", re.sub(r"\[[^\]]*\]", "", annotation.replace("Optional[", "None|")))
    words = [word for word in words if word not in ("Union", "Optional")]
    if not words or any(word not in PYTHON_TYPES for word in words):
        return None
    return tuple(kind for word in words for kind in PYTHON_TYPES[word])


def value_problem(name: str, value: object) -> str | None:
    """Why TRL's option `name` cannot take `value`, from its annotation and the RANGES above; None when it can."""
    if name in CHOICES:
        if value in CHOICES[name]:
            return None
        words = [str(choice).lower() if isinstance(choice, bool) else choice for choice in CHOICES[name]]
        return f"trl_options: {name}={value!r}: use one of {', '.join(words)}" + near_miss(str(value), words)
    kinds = accepted_types(trl_field_types().get(name, ""))
    wrong_bool = isinstance(value, bool) and bool not in (kinds or ())
    if kinds is not None and (not isinstance(value, kinds) or wrong_bool):
        return f"trl_options: {name}={value!r} must be {trl_field_types()[name]}"
    if name not in RANGES or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    lowest, highest, inclusive = RANGES[name]
    if not math.isfinite(value) or value < lowest or (value == lowest and not inclusive) or \
            (highest is not None and value > highest):
        bounds = f"{'at least' if inclusive else 'above'} {lowest}" + (f" and at most {highest}" if highest else "")
        return f"trl_options: {name}={value!r} must be {bounds}" + (
            " (each batch is trained on num_iterations times; 0 trains nothing)" if name == "num_iterations" else "")
    return None


def trl_option_problems(options: dict) -> list[str]:
    problems = []
    known = trl_field_names()
    for name, value in options.items():
        if name in TRL_INSTEAD and name not in trl_field_names():
            problems.append(f"trl_options: {trl_word_problem(name)}")
        elif name in MODELLED:
            problems.append(f"trl_options: {name} is set by this tool's own setting {MODELLED[name]}; set that "
                            "instead")
        elif known and name not in known:
            problems.append(f"trl_options: TRL's GRPOConfig has no option {name!r}{near_miss(name, sorted(known))}; "
                            "see https://huggingface.co/docs/trl/grpo_trainer for the options it has")
        elif problem := value_problem(name, value):
            problems.append(problem)
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
