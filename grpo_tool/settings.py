"""What a run's settings are: the `GRPOConfig` dataclass, each field with its default, help, choices and flag
spellings. How settings are layered and checked is config.py's; the flags are generated from these fields by
grpo_tool/flags.py. Import it from `config` (`from config import GRPOConfig`), which is the public face.

    config = GRPOConfig(model_name="tiny", dataset_name="sample", max_steps=5)
    assert FIELDS["learning_rate"].metadata["help"] and config.effective_generation_log_dir.endswith("generation_logs")
"""

from __future__ import annotations

import copy
import dataclasses
import os
import typing
from dataclasses import dataclass
from typing import Any

from grpo_tool.custom_rewards import reward_spec
from grpo_tool.data_files import ACCEPTED
from grpo_tool.datasets import DATASET_CHOICES, dataset_preset_name
from grpo_tool.group_choice import DEFAULT_MODE, DEFAULT_RESAMPLE_ROUNDS, MODES
from grpo_tool.launch import world_size
from grpo_tool.outputs import GENERATION_LOG_DIR

LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo")
# TRL's losses whose total over a step does not depend on how its rows are split into micro-batches (trl 1.14.2,
# _compute_loss: per-row means over equal micro-batches, or a global token count): for these the rows of a group may
# be put in one micro-batch, to share its prompt (grpo_tool/shared_prompts.py, and --plan's count of it). bnpo
# normalises by each micro-batch's tokens.
PARTITION_FREE_LOSSES = ("grpo", "dapo", "dr_grpo", "cispo", "sapo", "vespo", "luspo")
# Below this many parameters a forward pass costs its calls, not its arithmetic: the second call that sharing prompts
# makes costs more than the prompt tokens it saves (bench/overhead.py, tiny model, short prompts: 0.95x TRL shared
# against 1.03x unshared), so share_prompts unset leaves such a model unshared (grpo_tool/shared_prompts.py, and the
# plan's count of the same, grpo_tool/plan/memory.py).
SHARE_PROMPTS_MIN_PARAMETERS = 10_000_000


# Settings that name files or folders: a leading ~ is the user's home in every one of them, as a shell would read it
# (a shell does not, in a config file or after --flag=).
PATH_FIELDS = ("model_name", "custom_data", "eval_data", "reward_config_path", "reward_model", "reward_functions",
               "eval_reward_functions", "generation_log_dir", "output_dir", "resume_from_checkpoint", "tools",
               "environments", "chat_template")
DEFAULT_MAX_TOOL_CALLS = 5
DEFAULT_TOOL_TIMEOUT = 10.0


def expand_path(value: Any) -> Any:
    """`value` with a leading ~ expanded (each item of a list); anything else as it is."""
    if isinstance(value, list):
        return [expand_path(item) for item in value]
    return os.path.expanduser(value) if isinstance(value, str) and value.startswith("~") else value


def setting(default: Any, help: str, *, choices: tuple | None = None, flags: tuple[str, ...] = ()) -> Any:
    """A config field with what the command line needs: its help, its choices, and the original's flag spellings
    (`--field-name` is always generated as well). See train_grpo.build_parser."""
    metadata = {"help": help, "choices": choices, "flags": flags}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class GRPOConfig:
    # model
    model_name: str = setting("llama-3.1-8b", "a preset (llama-3.1-8b, llama-3.1-70b, gemma-2-9b, qwen2.5-7b, tiny), "
                              "a Hugging Face model id, or a local model directory", flags=("--model",))
    backend: str = setting("auto", "auto: Unsloth on a CUDA GPU when installed, else transformers + peft",
                           choices=("auto", "unsloth", "transformers"))
    trust_remote_code: bool = setting(False, "run model code shipped with a hub checkpoint (only ones you trust)")
    max_seq_length: int = setting(2048, "tokens of prompt + completion; longer prompts are dropped or truncated")
    load_in_4bit: bool = setting(True, "4-bit base weights (bitsandbytes) for a LoRA run on a CUDA GPU (QLoRA); full "
                                       "fine-tuning trains float32 weights, the CPU full precision")
    use_lora: bool = setting(True, "train a LoRA adapter (on) or every weight (off)", flags=("--lora",))
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(16, "LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)")
    lora_dropout: float = setting(0.0, "dropout on the LoRA path, in [0, 1)")
    lora_target_modules: str = setting("all-linear",
                                       "all-linear, or comma-separated module names such as q_proj,v_proj")
    bf16: bool | None = setting(None, "bfloat16 compute; unset: on for CUDA GPUs that support it, off on the CPU")
    gradient_checkpointing: bool | None = setting(None, "recompute activations to save memory; unset: on for CUDA "
                                                        "models of 100M+ parameters")
    merge_lora_for_generation: bool | None = setting(None, "fold the LoRA update into the weights while completions "
                                                           "are sampled, and out again after; unset: on for LoRA on "
                                                           "the CPU (unquantised weights), off elsewhere")
    share_prompts: bool | None = setting(None, "compute each group's prompt once and share its key/value cache with "
                                               "the group's completions, in generation and in the log-probability "
                                               "passes; unset: on wherever it is exact (checked on the model at "
                                               "start-up), off with the reason in the log elsewhere")
    # data
    dataset_name: str = setting("ultrafeedback", "a dataset preset, or its hub id", choices=DATASET_CHOICES,
                                flags=("--dataset",))
    custom_data: str | None = setting(None, f"{ACCEPTED} (prompt + any columns, chosen/rejected, question/answer, "
                                            "problem/solution, messages, Alpaca); replaces --dataset")
    prompt_column: str | None = setting(None, "the column that holds the prompt (text or chat messages), for a "
                                              "layout the tool does not detect; the other columns reach the rewards")
    system_prompt: str | None = setting(None, "a system message put before every prompt that has none (through the "
                                              "chat template; text models get it as a first paragraph)")
    max_samples: int | None = setting(None, "training prompts kept after conversion; unset: all")
    max_eval_samples: int = setting(100, "evaluation prompts kept; each evaluation generates for all of them")
    streaming: bool = setting(False, "read the training data while training runs; needs --max-steps")
    prompt_format: str = setting("auto", "auto: chat messages when the tokenizer has a chat template, else text",
                                 choices=("auto", "chat", "text"))
    prompt_overflow: str = setting("drop", "prompts over max_seq_length - max_completion_length tokens",
                                   choices=("drop", "truncate"))
    # grpo
    learning_rate: float = setting(5e-6, "peak learning rate")
    num_train_epochs: float = setting(1.0, "passes over the training prompts (replaced by --max-steps)",
                                      flags=("--epochs",))
    max_steps: int = setting(-1, "optimizer steps to run; -1: as many as --epochs needs")
    per_device_train_batch_size: int = setting(8, "completions (not prompts) per device per forward pass, as in TRL",
                                               flags=("--batch-size",))
    per_device_eval_batch_size: int = setting(8, "completions per device per evaluation batch")
    gradient_accumulation_steps: int = setting(4, "forward passes per optimizer step")
    group_size: int = setting(8, "completions sampled per prompt (TRL's num_generations); at least 2")
    eval_samples: int | None = setting(None, "completions sampled per held-out prompt at each evaluation (K of "
                                             "pass@K and maj@K); unset: group_size if the eval batch allows")
    eval_temperature: float | None = setting(None, "sampling temperature at evaluations, above 0; unset: temperature")
    max_completion_length: int = setting(256, "tokens generated per completion at most")
    temperature: float = setting(1.0, "sampling temperature for completions, above 0")
    top_p: float = setting(1.0, "nucleus sampling mass, in (0, 1]")
    beta: float = setting(0.0, "KL coefficient against the reference model; 0 loads no reference model")
    gamma: float = setting(1.0, "discount over turns; every episode is one completion, so only 1.0 is meaningful")
    loss_type: str = setting("dapo", "TRL's loss", choices=LOSS_TYPES)
    zero_variance_groups: str = setting("auto", "groups whose completions all scored the same teach nothing: keep "
                                                "them in the loss (TRL's way), drop them from it (no backward pass "
                                                "on them), or resample: fresh prompts top the step up to its number "
                                                f"of groups with signal; auto: {DEFAULT_MODE} (keep on the unsloth "
                                                "backend, drop with streaming data)", choices=("auto", *MODES))
    resample_rounds: int = setting(DEFAULT_RESAMPLE_ROUNDS, "resample: extra generation rounds a step may spend, "
                                                            "each as large as its own")
    curriculum_solved_rest: int = setting(0, "steps a prompt sits out after its whole group scored the run's highest "
                                             "reward so far; 0: never")
    curriculum_hopeless_rest: int = setting(0, "steps a prompt sits out after its whole group scored the run's "
                                               "lowest reward so far, before it is tried again; 0: never")
    tools: list = setting([], "tools the model may call while it answers: calculator (built in), FILE.py:FUNCTION or "
                              "package.module:FUNCTION, each a function with a type hint on every argument and a "
                              "docstring whose Args: section describes each; comma-separated, repeatable")
    environments: list = setting([], "an environment class FILE.py:CLASS or package.module:CLASS: reset(**row) starts "
                                     "an episode, its public methods are the tools, get_reward() (optional) scores "
                                     "it; NAME=SPEC for several, the dataset's environment column choosing one per "
                                     "row; repeatable", flags=("--environment",))
    max_tool_calls: int = setting(DEFAULT_MAX_TOOL_CALLS, "rounds of tool calls a completion may make (TRL's "
                                                          "max_tool_calling_iterations); tool results count "
                                                          "against max_completion_length")
    tool_timeout: float = setting(DEFAULT_TOOL_TIMEOUT, "seconds a tool call may run before it is stopped and "
                                                        "counted as a failed call")
    chat_template: str | None = setting(None, "a Jinja chat template FILE for the model, replacing its own; "
                                              "chatml_tools (bundled) carries tool calls for ChatML models such as "
                                              "SmolLM2")
    use_vllm: bool = setting(False, "generate completions with vLLM (CUDA and the vllm package needed)")
    vllm_mode: str = setting("colocate", "colocate: vLLM shares the GPU; server: a separate `trl vllm-serve`",
                             choices=("colocate", "server"))
    vllm_gpu_memory_utilization: float = setting(0.3, "colocate: the share of GPU memory vLLM may take, in (0, 1)")
    seed: int = setting(42, "seed for data order, sampling and weight initialisation")
    trl_options: dict = setting({}, "options of TRL's own GRPOConfig that this config does not model, KEY=VALUE "
                                    "(value read as JSON, else text), e.g. scale_rewards=batch; repeatable",
                                flags=("--trl-option",))
    # rewards
    reward_function_type: str = setting("single", "one weighted reward (single) or one TRL reward per component "
                                                  "(multi)", choices=("single", "multi"), flags=("--reward-function",))
    reward_config_name: str | None = setting(None, "a reward preset in config/rewards/; unset: balanced, or none "
                                                   "when --reward-fn / --reward-model give rewards of your own")
    reward_config_path: str | None = setting(None, "a reward config JSON file, or a preset name; replaces "
                                                   "reward_config_name", flags=("--reward-config",))
    reward_model: str | None = setting(None, "a sequence-classification model (hub id, directory, or tiny) as one "
                                             "more component (weight: reward_model_weight)")
    reward_functions: list = setting([], "a reward function FILE.py:FUNCTION or package.module:FUNCTION taking "
                                         "(completions, **kwargs); repeatable (weights: custom_weights); alone, it "
                                         "replaces the default preset", flags=("--reward-fn",))
    eval_reward_functions: list = setting([], "a held-out score FILE.py:FUNCTION(completions, **kwargs) computed at "
                                              "each evaluation only, never trained on; logged as "
                                              "eval_rewards/<function>/mean; repeatable", flags=("--eval-reward-fn",))
    eval_data: str | None = setting(None, "evaluate on this file's rows (any layout --custom-data takes) instead "
                                          "of the training data's held-out split; max_eval_samples of them")
    eval_checkpoints: str | None = setting(None, "--eval-only: evaluate the starting model and the run's checkpoints "
                                                 "on the same held-out prompts and write one table "
                                                 "(evaluation/comparison.json): all, or steps such as 100,200")
    metric_for_best_model: str | None = setting(None, "keep the checkpoint best at this evaluation metric (never "
                                                      "rotated away; named in trainer_state.json): an "
                                                      "--eval-reward-fn or reward function's name, reward, base_nll, "
                                                      "base_drift, or another metric an evaluation logs; lower wins "
                                                      "for *nll, *drift, *loss and tools/failure_frequency")
    # logging
    logging_steps: int = setting(10, "optimizer steps between metric logs")
    eval_steps: int = setting(50, "optimizer steps between evaluations (each writes a generation log)")
    save_steps: int = setting(100, "optimizer steps between checkpoints")
    save_total_limit: int | None = setting(3, "checkpoints kept; unset: all")
    enable_generation_logging: bool = setting(True, "write generation logs at each evaluation",
                                              flags=("--enable-generation-logging", "--disable-generation-logging"))
    generation_log_dir: str | None = setting(None, "where generation logs go; unset: {output_dir}/generation_logs")
    max_generation_samples: int = setting(5, "prompts per generation log")
    wandb_project: str | None = setting(None, "log to this Weights & Biases project; unset: W&B off")
    tensorboard: bool = setting(False, "also write TensorBoard event files under {output_dir}/runs/")
    # output
    output_dir: str = setting("./grpo_outputs", "checkpoints, final model, logs, effective config; one run per dir")
    overwrite_output_dir: bool = setting(False, "replace the earlier run in the output dir (its checkpoints, logs, "
                                                "record and model; other files stay)")
    save_merged: bool = setting(False, "also save LoRA merged into 16-bit base weights, in final_model/merged")
    resume_from_checkpoint: str | None = setting(None, "a checkpoint-N directory to continue from, or 'latest' in "
                                                       "the output dir")

    def __post_init__(self):
        # The original's example config says "systematic" for the per-component reward.
        if self.reward_function_type == "systematic":
            self.reward_function_type = "multi"
        for name in PATH_FIELDS:
            setattr(self, name, expand_path(getattr(self, name)))
        self.dataset_name = dataset_preset_name(self.dataset_name)

    @property
    def four_bit(self) -> bool:
        """Whether the base weights load in 4 bits on a GPU: asked for, and a LoRA run, since full fine-tuning trains
        every weight and 4-bit weights cannot be trained."""
        return self.load_in_4bit and self.use_lora

    @property
    def effective_generation_log_dir(self) -> str:
        return self.generation_log_dir or os.path.join(self.output_dir, GENERATION_LOG_DIR)


FIELDS = {field.name: field for field in dataclasses.fields(GRPOConfig)}
FIELD_NAMES = tuple(FIELDS)
FIELD_TYPES = typing.get_type_hints(GRPOConfig)
# Each pair says the same thing two ways; a layer that sets one drops what lower layers set for the other.
ALTERNATIVES = {"num_train_epochs": "max_steps", "max_steps": "num_train_epochs"}
# Fields that, from Python, may hold the functions (or classes) themselves instead of their names.
OBJECT_FIELDS = ("reward_functions", "eval_reward_functions", "tools", "environments")


def object_specs(value: list | dict) -> list[str]:
    """Functions or classes as a JSON file names them (module:name); environments given as {name: class} from Python
    as NAME=module:name, the command line's form."""
    if isinstance(value, dict):
        return [f"{name}={reward_spec(item)}" for name, item in value.items()]
    return [reward_spec(item) for item in value]


def settings_record(config: GRPOConfig) -> dict[str, Any]:
    """The config as a JSON file holds it (save_config_to_file, the run's record): a reward function given as a Python
    object is written as its module:name."""
    record = {name: copy.deepcopy(getattr(config, name)) for name in FIELD_NAMES if name not in OBJECT_FIELDS}
    record.update({name: object_specs(getattr(config, name)) for name in OBJECT_FIELDS})
    return {name: record[name] for name in FIELD_NAMES}


def explicit_settings(config: GRPOConfig) -> frozenset[str]:
    """The fields the user chose: those build_config took from a config file or from flags (a preset's or a mode's
    values are the tool's choice, not the user's), or, for a config built in Python, those that differ from their
    defaults."""
    chosen = getattr(config, "_explicit", None)
    if chosen is not None:
        return chosen
    defaults = GRPOConfig()
    return frozenset(name for name in FIELD_NAMES if getattr(config, name) != getattr(defaults, name))


def resolved_eval_samples(config: GRPOConfig) -> int:
    """Completions per prompt at evaluation.

    Unset, it is group_size when the global eval batch holds whole groups, else the largest group size up to
    group_size that fits (the original's example config pairs an eval batch of 2 with a group of 4).
    """
    if config.eval_samples is not None:
        return config.eval_samples
    global_batch = config.per_device_eval_batch_size * world_size()
    return max(size for size in range(1, max(1, config.group_size) + 1) if global_batch % size == 0)
