"""The run configuration: the single place where settings are layered and checked. The fields themselves (the
`GRPOConfig` dataclass, imported from here) are in grpo_tool/settings.py.

Settings are layered in one order, later layers winning: dataclass defaults < model and dataset presets <
mode (`--quick-test` / `--production`) < `--config` file (JSON or YAML) < flags the user gave. A value the user gave
also beats what a lower layer set in its place: `--epochs` drops a mode's `max_steps`, and the other way round.

    config = create_default_config("llama-3.1-8b", "ultrafeedback")
    assert config.model_name == "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"    # the checkpoint the preset stands for
    save_config_to_file(config, "my_config.json")
    assert build_config(config_file="my_config.json") == config    # loads back with --config my_config.json
"""

from __future__ import annotations

import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from grpo_tool.custom_rewards import reward_function_problem
from grpo_tool.data_files import data_path_problem
from grpo_tool.datasets import DATASET_PRESETS, SAMPLE_DATASET, dataset_preset_name
from grpo_tool.errors import UserError, near_miss
from grpo_tool.group_choice import setting_problems as group_problems
from grpo_tool.json_files import read_json_file, read_text_file, write_json_atomic
from grpo_tool.launch import world_size
from grpo_tool.model_registry import (
    TINY_MODEL,
    model_name_problem,
    model_preset,
    pre_quantised_problem,
    resolve_model_name,
)
from grpo_tool.places import unwritable
from grpo_tool.recipes import config_file_path
from grpo_tool.reward_config import reward_key_problem, rule_weights_problem, run_reward_config
from grpo_tool.settings import (
    ALTERNATIVES,
    FIELD_NAMES,
    FIELD_TYPES,
    FIELDS,
    OBJECT_FIELDS,
    GRPOConfig,
    expand_path,
    resolved_eval_samples,
    settings_record,
)
from grpo_tool.tiny_model import tiny_model_dir, tiny_reward_model_dir
from grpo_tool.tools import spec_problems as tool_spec_problems
from grpo_tool.trl_options import TRL_ALIASES, trl_option_problems, trl_word_problem

OWN_REWARDS = ("reward_functions", "reward_model")  # settings that bring rewards of the user's own

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
MODE_FLAGS = {"quick_test": "--quick-test", "production": "--production"}
# --quick-test on a real model (a step of a 135M model takes seconds on a CPU, not the tiny model's 0.05 s): a smoke
# run of about three minutes on two cores for SmolLM2-135M, with two evaluations.
QUICK_TEST_REAL_MODEL = {"max_steps": 20, "logging_steps": 5, "eval_steps": 10, "save_steps": 20,
                         "max_eval_samples": 4, "max_generation_samples": 4}


def create_default_config(model: str = "llama-3.1-8b", dataset: str = "ultrafeedback") -> GRPOConfig:
    """Defaults with the model and dataset presets applied; model_name holds the checkpoint the preset stands for."""
    config = build_config(overrides={"model_name": model, "dataset_name": dataset})
    config.model_name = resolve_model_name(config.model_name)
    return config


def save_config_to_file(config: GRPOConfig, path: str | os.PathLike) -> None:
    write_json_atomic(path, settings_record(config))


EXPONENT_NUMBER = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


def read_settings_file(path: str | os.PathLike) -> Any:
    """A config file's content: YAML for .yaml / .yml (what TRL users write), JSON otherwise."""
    if Path(path).suffix.lower() not in (".yaml", ".yml"):
        return read_json_file(path, "config file")
    import yaml  # PyYAML is small and pure Python: reading a YAML config stays fast

    class UniqueKeyLoader(yaml.SafeLoader):
        """YAML that refuses a repeated key (PyYAML would keep the last value silently)."""

        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
            repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
            if repeated:
                raise yaml.YAMLError(f"the key {repeated[0]!r} appears twice")
            return super().construct_mapping(node, deep=deep)

    # YAML 1.1 reads 1e-6 (no dot) as text; TRL's parser, and YAML 1.2, read it as the number it looks like.
    UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_NUMBER, list("-+0123456789."))
    text = read_text_file(path, "config file")
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as error:
        raise UserError(f"config file {path}: not readable YAML ({str(error).splitlines()[0]})") from None


def load_config_file(path: str | os.PathLike, notes: list[str] | None = None) -> dict[str, Any]:
    """The settings of a config file, with unknown keys and wrong types reported together. TRL's names of our
    settings (num_generations, model_name_or_path) are read as ours; TRL's words for what is set another way get
    what to use instead, and no guess at a similar name. A recipe's name (config/recipes/) reads that recipe."""
    path = config_file_path(str(path))
    data = read_settings_file(path)
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a mapping of settings (like config/example_config.json), got "
                        f"{type(data).__name__}")
    data = dict(data)
    for trl_name, ours in TRL_ALIASES.items():
        if trl_name in data:
            if ours in data:
                raise UserError(f"config file {path}: {trl_name} (TRL's name) and {ours} say the same; keep one")
            data[ours] = data.pop(trl_name)
            if notes is not None:
                notes.append(f"{trl_name} in {path} is TRL's name for {ours}")
    problems = [unknown_key_problem(str(key), value) for key, value in data.items() if key not in FIELDS]
    if any(problem.startswith("unknown key") for problem in problems):
        problems.append(f"valid keys: {', '.join(FIELD_NAMES)}")
    problems += [problem for key, value in data.items() if key in FIELDS
                 for problem in [type_problem(key, value)] if problem]
    if problems:
        raise UserError(f"config file {path}: " + "; ".join(problems))
    return data


def unknown_key_problem(key: str, value: Any) -> str:
    """A config file's key that is no setting: TRL's word for one set another way, a reward weight (those live in the
    reward config), or a misspelling."""
    if problem := trl_word_problem(key):
        return problem
    if problem := reward_key_problem(key):
        return f"{key}={value!r}: {problem}"
    return f"unknown key {key!r}" + near_miss(key, FIELD_NAMES)


def type_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot be the value of the field `name`, or None when it can."""
    expected = FIELD_TYPES[name]
    union = typing.get_origin(expected) in (typing.Union, types.UnionType)
    options = typing.get_args(expected) if union else (expected,)
    if expected is list:
        functions = name in OBJECT_FIELDS  # from Python, the functions themselves, as TRL takes them
        named = name == "environments" and isinstance(value, dict) and all(isinstance(key, str) for key in value)
        items = value.values() if named else value if isinstance(value, list) else None
        if items is not None and all(isinstance(item, str) or (functions and callable(item)) for item in items):
            return None
        return f"{name}={value!r} must be a list of strings" + (
            " or classes (or a mapping of names to them)" if name == "environments" else
            " or functions" if functions else "")
    if expected is dict:
        return None if isinstance(value, dict) else f"{name}={value!r} must be a mapping of names to values"
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return None
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None if math.isfinite(value) else f"{name}={value!r} must be a finite number"
        if option is str and isinstance(value, str):
            if value.strip():
                return None
            unset = type(None) in options
            return f"{name}={value!r} is empty: give a value" + (" (or none / null to unset it)" if unset else "")
    names = " or ".join("null" if option is type(None) else option.__name__ for option in options)
    return f"{name}={value!r} must be {names}"


def quick_test_defaults(chosen: dict[str, Any], notes: list[str] | None) -> dict[str, Any]:
    """With nothing named, the smoke test runs offline: the tiny model on the bundled sample data. Given a real
    model, it is scaled to that model's speed (and says so)."""
    defaults = {}
    if "model_name" not in chosen:
        defaults["model_name"] = TINY_MODEL
    elif chosen["model_name"] != TINY_MODEL:
        scaled = {key: value for key, value in QUICK_TEST_REAL_MODEL.items() if key not in chosen}
        defaults.update(scaled)
        if notes is not None and scaled:
            notes.append("--quick-test scaled to a real model: " + ", ".join(f"{k}={v}" for k, v in scaled.items()))
    if "dataset_name" not in chosen and not chosen.get("custom_data"):
        defaults["dataset_name"] = SAMPLE_DATASET
    return defaults


def build_config(mode: str | None = None, config_file: str | None = None,
                 overrides: dict[str, Any] | None = None, notes: list[str] | None = None) -> GRPOConfig:
    """Layer defaults, presets, mode, config file and explicit overrides, then check the result as a whole.

    `notes` receives a sentence for each value a higher layer dropped from a lower one (for the start-up log).
    """
    overrides = dict(overrides or {})
    problems = [problem for key, value in overrides.items() for problem in [type_problem(key, value)] if problem]
    if problems:
        raise UserError("; ".join(problems))
    file_settings = load_config_file(expand_path(config_file), notes) if config_file else {}
    mode_settings = dict(MODE_PRESETS[mode]) if mode else {}
    chosen = {**file_settings, **overrides}
    if mode == "quick_test":
        mode_settings.update(quick_test_defaults(chosen, notes))
    model_name = chosen.get("model_name", mode_settings.get("model_name", GRPOConfig.model_name))
    dataset_name = dataset_preset_name(chosen.get("dataset_name", mode_settings.get("dataset_name",
                                                                                  GRPOConfig.dataset_name)))
    layers = [("the model preset", model_preset(model_name) if isinstance(model_name, str) else {}),
              ("the dataset preset", DATASET_PRESETS.get(dataset_name, {})),
              (MODE_FLAGS.get(mode, ""), mode_settings), (f"--config {config_file}", file_settings),
              ("your flags", overrides)]
    settings: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for label, layer in layers:
        for key, value in layer.items():
            other = ALTERNATIVES.get(key)
            if other in settings and other not in layer:
                if notes is not None:
                    notes.append(f"{key}={value} from {label} replaces {other}={settings[other]} from "
                                 f"{origin[other]}")
                del settings[other]
            settings[key], origin[key] = value, label
    if origin.get("reward_config_name") == "the dataset preset" and any(chosen.get(key) for key in OWN_REWARDS) \
            and not ({"reward_config_name", "reward_config_path"} & chosen.keys()):
        # The dataset's usual reward gives way to rewards the user brings, as no reward config at all would.
        if notes is not None:
            notes.append(f"your rewards replace reward_config_name={settings['reward_config_name']} from the dataset "
                         "preset (name it with --reward-config to keep it)")
        del settings["reward_config_name"]
    if settings.get("use_lora") is False and chosen.get("load_in_4bit") is True:
        raise UserError("load_in_4bit=true with full fine-tuning (use_lora=false): 4-bit weights cannot be trained; "
                        "give --lora for LoRA on 4-bit weights (QLoRA), or leave load_in_4bit unset")
    config = GRPOConfig(**settings)
    validate_config(config)
    config._explicit = frozenset(chosen)  # settings.explicit_settings: what the user asked for, by name
    return config


def validate_config(config: GRPOConfig) -> None:
    """Check every field and the combinations TRL would reject later; report all problems in one message. A config
    is checked once for the values it has: build_config checks what it builds, GRPOTrainer what a Python caller
    hands it, and the second finds the first's mark unless a value changed since."""
    values = repr([getattr(config, name) for name in FIELD_NAMES])  # not astuple: it would deep-copy a reward object
    if getattr(config, "_checked_values", None) == values:
        return
    problems = [problem for field in FIELD_NAMES if (problem := type_problem(field, getattr(config, field)))]
    if not problems:
        problems = (choice_problems(config) + range_problems(config) + path_problems(config) + batch_problems(config)
                    + trl_option_problems(config.trl_options) + group_problems(config))
    if problems:
        raise UserError("; ".join(problems))
    config._checked_values = values


def choice_problems(config: GRPOConfig) -> list[str]:
    problems = []
    for name, field in FIELDS.items():
        choices, value = field.metadata["choices"], getattr(config, name)
        if choices and value not in choices:
            problems.append(f"{name}={value!r}: use one of {', '.join(choices)}" + near_miss(str(value), choices)
                            + (" (for a hub dataset without a preset, save it as files and give custom_data)"
                               if name == "dataset_name" and "/" in str(value) else ""))
    return problems


AT_LEAST_ONE = ("max_seq_length", "per_device_train_batch_size", "per_device_eval_batch_size",
                "gradient_accumulation_steps", "max_completion_length", "logging_steps", "eval_steps", "save_steps",
                "lora_r", "lora_alpha", "max_eval_samples")


INT_LIMIT = 2**31 - 1  # what C code down the line (torch, numpy's seed) takes


def range_problems(config: GRPOConfig) -> list[str]:
    problems = [f"{name}={getattr(config, name)} must be at least 1" for name in AT_LEAST_ONE
                if getattr(config, name) < 1]
    problems += [f"{name}={getattr(config, name)} is too large (at most {INT_LIMIT})" for name in FIELDS
                 if isinstance(getattr(config, name), int) and not isinstance(getattr(config, name), bool)
                 and abs(getattr(config, name)) > INT_LIMIT]
    problems += [f"seed={config.seed} must be >= 0"] if config.seed < 0 else []
    problems += [f"{name}={getattr(config, name)} must be at least 1, or null for no limit"
                 for name in ("max_samples", "save_total_limit") if getattr(config, name) is not None
                 and getattr(config, name) < 1]
    checks = [
        (config.max_generation_samples >= 0, f"max_generation_samples={config.max_generation_samples} must be >= 0"),
        (0 < config.learning_rate < 1, f"learning_rate={config.learning_rate} must be between 0 and 1 (GRPO runs "
                                       "typically use 1e-6 to 1e-5 with LoRA)"),
        (config.num_train_epochs > 0, f"num_train_epochs={config.num_train_epochs} must be above 0"),
        (config.max_steps == -1 or config.max_steps > 0, f"max_steps={config.max_steps} must be -1 or at least 1"),
        (config.temperature > 0, f"temperature={config.temperature} must be above 0"),
        (config.eval_temperature is None or config.eval_temperature > 0,
         f"eval_temperature={config.eval_temperature} must be above 0, or null for the training temperature"),
        (config.eval_checkpoints is None or checkpoint_steps(config.eval_checkpoints) is not None,
         f"eval_checkpoints={config.eval_checkpoints!r} must be all, or checkpoint steps such as 100,200"),
        (0 < config.top_p <= 1, f"top_p={config.top_p} must be in (0, 1]"),
        (config.beta >= 0, f"beta={config.beta} must be a number >= 0"),
        (config.gamma == 1.0, f"gamma={config.gamma}: every episode is a single completion, so only 1.0 is "
                              "meaningful; set gamma to 1.0"),
        (0 <= config.lora_dropout < 1, f"lora_dropout={config.lora_dropout} must be in [0, 1)"),
        (not config.streaming or config.max_steps > 0,
         "streaming=true needs max_steps: a stream's length is unknown, so the run needs a step count"),
        (0 < config.vllm_gpu_memory_utilization < 1,
         f"vllm_gpu_memory_utilization={config.vllm_gpu_memory_utilization} must be between 0 and 1"),
        (bool(config.lora_target_modules.strip()),
         "lora_target_modules is empty: use all-linear or module names such as q_proj,v_proj"),
        (not (config.share_prompts and config.backend == "unsloth"),
         "share_prompts=true with backend=unsloth: Unsloth's own training loop computes log-probabilities its own "
         "way, so prompts are shared on the transformers backend only; leave share_prompts unset"),
        (config.max_tool_calls >= 1, f"max_tool_calls={config.max_tool_calls} must be at least 1 (a run without "
                                     "tool calls gives no tools)"),
        (config.tool_timeout > 0, f"tool_timeout={config.tool_timeout} must be above 0 seconds"),
        (config.prompt_format != "text" or not (config.tools or config.environments),
         "prompt_format=text with tools: a tool call and its result are turns of a chat, so tools need chat "
         "prompts; use prompt_format auto or chat"),
        (config.max_completion_length < config.max_seq_length,
         f"max_completion_length={config.max_completion_length} leaves no room for a prompt in "
         f"max_seq_length={config.max_seq_length}: raise max_seq_length or lower max_completion_length"),
    ]
    return problems + [message for passed, message in checks if not passed]


def checkpoint_steps(value: str) -> list[int] | None:
    """--eval-checkpoints: [] for all, the steps of a list such as 100,200, or None when it is neither."""
    if value.strip().lower() == "all":
        return []
    words = [word.strip() for word in value.split(",")]
    if not words or not all(word.isdigit() and int(word) > 0 for word in words):
        return None
    return sorted({int(word) for word in words})


def path_problems(config: GRPOConfig) -> list[str]:
    """Names and files that can be checked without loading anything: model, data, rewards, checkpoint."""
    problems = [problem for problem in [model_name_problem(config.model_name),
                                        pre_quantised_problem(config.model_name, config.four_bit)] if problem]
    if config.custom_data is not None and (problem := data_path_problem(config.custom_data)):
        problems.append(problem)
    if config.eval_data is not None and (problem := data_path_problem(config.eval_data, "eval_data")):
        problems.append(problem)
    if config.eval_data is not None and config.max_eval_samples == 0:
        problems.append(f"eval_data={config.eval_data} gives evaluation rows, and max_eval_samples is 0 (no "
                        "evaluation): drop one of them")
    if config.reward_model not in (None, TINY_MODEL):
        problems += [problem for problem in [model_name_problem(config.reward_model, "reward model")] if problem]
    try:
        reward_config = run_reward_config(config)
        own = list(config.reward_functions) or list(config.environments)  # an environment's reward counts 1.0 too
        problems += [problem for problem in [rule_weights_problem(reward_config, own, config.reward_model)] if problem]
    except UserError as error:
        problems.append(str(error))
    problems += [problem for spec in config.reward_functions for problem in [reward_function_problem(spec)] if problem]
    problems += [problem for spec in config.eval_reward_functions
                 for problem in [reward_function_problem(spec, "--eval-reward-fn")] if problem]
    problems += tool_spec_problems(config)
    if config.metric_for_best_model and config.eval_steps % config.save_steps:
        problems.append(f"metric_for_best_model={config.metric_for_best_model} keeps the best evaluated checkpoint, "
                        f"so every evaluation needs a checkpoint, but eval_steps={config.eval_steps} is not a "
                        f"multiple of save_steps={config.save_steps}: set save_steps={config.eval_steps} (or a "
                        "divisor of it)")
    if config.metric_for_best_model and config.max_eval_samples == 0:
        problems.append(f"metric_for_best_model={config.metric_for_best_model} needs evaluations, and "
                        "max_eval_samples is 0")
    problems += place_problems(config)
    if config.resume_from_checkpoint not in (None, "latest") and not Path(config.resume_from_checkpoint).is_dir():
        problems.append(f"checkpoint {config.resume_from_checkpoint}: no such directory (give a checkpoint-N "
                        "directory from an earlier run's output dir, or 'latest')")
    return problems


def place_problems(config: GRPOConfig) -> list[str]:
    """The folders a run writes in: each must be a folder (or can become one) that this process can write to. The
    tool's cache counts only when something must be built there (the tiny models, on first use)."""
    folders = [("output_dir", config.output_dir)]
    if config.enable_generation_logging and config.generation_log_dir:
        folders.append(("generation_log_dir", config.generation_log_dir))
    tiny = [path for name, path in ((config.model_name, tiny_model_dir()), (config.reward_model,
                                                                            tiny_reward_model_dir()))
            if name == TINY_MODEL and not (path / "config.json").is_file()]
    if tiny:
        folders.append(("the tool's cache", tiny[0],
                        "set XDG_CACHE_HOME (or GRPO_TINY_MODEL_DIR) to a folder you can write to"))
    problems = []
    if config.custom_data and Path(config.custom_data).is_dir():
        data, output = Path(config.custom_data).resolve(), Path(config.output_dir).resolve()
        if output == data or data in output.parents:
            problems.append(f"output_dir {config.output_dir} is inside the data folder {config.custom_data}: the run's "
                            "files would be read as data next time; give an output dir outside it")
    for name, folder, *fix in folders:
        blocked = next((path for path in [Path(folder), *Path(folder).parents]
                        if (path.exists() or path.is_symlink()) and not path.is_dir()), None)
        if blocked is not None and blocked.is_symlink() and not blocked.exists():
            problems.append(f"{name} {folder}: {blocked} is a link to {os.readlink(blocked)}, which does not exist; "
                            "create that folder or give another path")
        elif blocked is not None:
            problems.append(f"{name} {folder}: {blocked} is a file, so no directory can be made there; give another "
                            "path")
        elif problem := unwritable(name, folder, *fix):
            problems.append(problem)
    return problems


def steps_problem(config: GRPOConfig, prompts: int) -> str | None:
    """Why `prompts` training prompts give this config no training step, or None."""
    completions = config.per_device_train_batch_size * config.gradient_accumulation_steps * world_size()
    per_step = completions // config.group_size
    if prompts < per_step:
        return (f"{prompts} training prompt(s), but one step needs {per_step} (--batch-size "
                f"{config.per_device_train_batch_size} x --gradient-accumulation-steps "
                f"{config.gradient_accumulation_steps} x {world_size()} process(es) / --group-size "
                f"{config.group_size}): "
                "give more prompts (--max-samples, the data) or lower the batch")
    if config.max_steps <= 0 and int(config.num_train_epochs * (prompts // per_step)) == 0:
        return (f"--epochs {config.num_train_epochs} of {prompts} training prompts is less than one step of {per_step} "
                "prompts: raise --epochs or set --max-steps")
    return None


def describe_batch(config: GRPOConfig, processes: int, steps_per_generation: int) -> str:
    """The start-up line that states the global batch once, whatever the number of processes, and what divides what.

        describe_batch(GRPOConfig(per_device_train_batch_size=8, gradient_accumulation_steps=4, group_size=8), 2, 4)
        # global batch: 64 completions a step (8 per device x 4 accumulation steps x 2 processes) = 8 prompts x
        # a group of 8; each generation samples 64 completions (8 groups), once every 4 micro-batches
    """
    def count(number: int, word: str) -> str:
        return f"{number} {word}{'' if number == 1 else 'es' if word.endswith(('ch', 'ss')) else 's'}"

    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps * processes
    sampled = config.per_device_train_batch_size * steps_per_generation * processes
    every = "every micro-batch" if steps_per_generation == 1 else f"every {steps_per_generation} micro-batches"
    return (f"global batch: {per_step} completions a step ({config.per_device_train_batch_size} per device x "
            f"{count(config.gradient_accumulation_steps, 'accumulation step')} x {count(processes, 'process')}) = "
            f"{count(per_step // config.group_size, 'prompt')} x a group of {config.group_size}; each generation "
            f"samples {sampled} completions ({count(sampled // config.group_size, 'group')}), once {every}")


def batch_problems(config: GRPOConfig) -> list[str]:
    """TRL's divisibility rules, checked with the process count, with values that would work."""
    if config.group_size < 2:
        return [f"group_size={config.group_size}: GRPO compares completions within a group, so it needs at least 2"]
    problems = []
    processes = world_size()
    per_step = processes * config.gradient_accumulation_steps
    generation_batch = config.per_device_train_batch_size * per_step
    if generation_batch % config.group_size:
        step = config.group_size // math.gcd(config.group_size, per_step)
        problems.append(
            f"per_device_train_batch_size={config.per_device_train_batch_size} with "
            f"gradient_accumulation_steps={config.gradient_accumulation_steps} on {processes} process(es) samples "
            f"{generation_batch} completions per generation, which group_size={config.group_size} does not divide: "
            f"use per_device_train_batch_size={step} (or {2 * step}, {3 * step}), or a group_size "
            f"that divides {generation_batch}")
    eval_group = resolved_eval_samples(config)
    eval_batch = config.per_device_eval_batch_size * processes
    if eval_group < 1:
        problems.append(f"eval_samples={eval_group} must be at least 1, or null")
    elif eval_batch % eval_group:
        step = eval_group // math.gcd(eval_group, processes)
        problems.append(f"per_device_eval_batch_size={config.per_device_eval_batch_size} on {processes} process(es) "
                        f"is not a multiple of eval_samples={eval_group}: use per_device_eval_batch_size={step} "
                        f"(or {2 * step}, {3 * step})")
    return problems
