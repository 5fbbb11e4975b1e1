"""The private names of TRL and transformers this tool relies on, declared in one place with the signature each was
written against: the methods grpo_tool/trainer_hooks.py overrides or calls, the attributes it reads, and the names
it imports from inside the libraries' packages. `moved()` compares the list with what is installed and says, one line
each, what is no longer there or no longer takes what it took; tests/test_trl_surface.py fails on any, and
grpo_trainer.py logs them as a warning before training, so a user who upgraded TRL past the pin hears which of the
tool's jobs may no longer apply instead of finding out from a quietly different run.

    assert moved() == [] or installed() != TESTED
    assert render(lambda self, model, *args, batch=None, **kwargs: 0) == "(model, *args, batch, **kwargs)"
    assert matches("(model, input_ids, batch_size)", "(model, ...)")
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# The versions the declared surface was read from, as requirements.txt pins them (tests/test_trl_surface.py keeps the
# two the same). A run on other versions compares the surface before training and warns about what moved.
TESTED = {"trl": "1.14.2", "transformers": "5.17.0"}


@dataclass(frozen=True)
class Method:
    """A method of the trainer as our mixins meet it (resolved through trl.GRPOTrainer's classes), and its parameters
    after `self`, as `render` writes them; `(model, ...)`: only the first is relied on (an override that passes the
    rest on as they came)."""

    name: str
    parameters: str
    used_by: str


@dataclass(frozen=True)
class Attribute:
    """An attribute the trainer sets on itself (found as `self.<name> =` in the source of its classes)."""

    name: str
    used_by: str


@dataclass(frozen=True)
class Imported:
    """A name imported from inside a library's package rather than from its top level."""

    module: str
    name: str
    used_by: str


METHODS = (
    Method("_save_checkpoint", "(model, trial)", "StagedCheckpoints, SignalGroupsOnly, StepRecords"),
    Method("_get_output_dir", "(trial)", "StagedCheckpoints: checkpoints written into .staging/"),
    Method("_init_training_state", "(max_steps, num_update_steps_per_epoch, num_train_epochs, "
           "resume_from_checkpoint, trial)", "RunIntervalsOnResume"),
    Method("_load_optimizer_and_scheduler", "(checkpoint)", "OptimizerStateOnCpu, SignalGroupsOnly, StepRecords"),
    Method("_load_from_checkpoint", "(resume_from_checkpoint, model)", "grpo_trainer.py: finishing a run at its last "
           "step"),
    Method("_get_train_sampler", "(dataset)", "LongestPromptsFirst"),
    Method("_maybe_log_save_evaluate", "(tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval, start_time, "
           "learning_rate)", "StepRecords: one record per optimizer step"),
    Method("training_step", "(model, inputs, num_items_in_batch)", "StepRecords: each micro-batch's loss"),
    Method("_generate_single_turn", "(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)",
           "LoraMergedForGeneration, SharedPrompts"),
    Method("_get_per_token_logps_and_entropies", "(model, ...)", "SharedPrompts: the model's forward shares prompts "
           "during the call"),
    Method("_prepare_inputs", "(generation_batch)", "SharedPrompts: regrouped generation batches"),
    Method("_generate_and_score_completions", "(inputs)",
           "SignalGroupsOnly, StepRecords, BaseModelMeasure, HeldOutScores"),
    Method("_calculate_rewards", "(inputs, prompts, completions, completion_ids_list)", "SignalGroupsOnly"),
    Method("_compute_loss", "(model, inputs)", "StepRecords: no entropy logged for a step with no token in its loss"),
    Method("evaluate", "(eval_dataset, ignore_keys, metric_key_prefix)", "HeldOutScores: its own sampling state"),
    Method("create_model_card", "(model_name, dataset_name, tags)", "OwnModelCard: no placeholder card"),
)

ATTRIBUTES = (
    Attribute("_metrics", "StepRecords, SignalGroupsOnly, BaseModelMeasure, HeldOutScores: TRL's lists of values "
              "per metric, averaged at each log"),
    Attribute("_buffered_inputs", "SharedPrompts: the generation batch split per optimizer step"),
    Attribute("_step", "SharedPrompts: which micro-batch of the generation batch is next"),
)

IMPORTED = (
    Imported("trl.trainer.utils", "RepeatSampler", "LongestPromptsFirst"),
    Imported("trl.trainer.utils", "split_tensor_dict", "shared_prompts.py"),
    Imported("trl.models.utils", "disable_gradient_checkpointing", "SharedPrompts"),
    Imported("trl.models.utils", "prepare_deepspeed", "base_view.py: the starting model under ZeRO-3"),
    Imported("trl.chat_template_utils", "parse_response", "tools.py, sampling.py"),
    Imported("trl.chat_template_utils", "add_response_schema", "tools.py"),
    Imported("trl.chat_template_utils", "is_chat_template_prefix_preserving", "tools.py"),
    Imported("trl.chat_template_utils", "supports_tool_calling", "tools.py"),
    Imported("trl.chat_template_utils", "get_training_chat_template", "tools.py"),
    Imported("transformers.trainer", "TRAINER_STATE_NAME", "StagedCheckpoints"),
    Imported("transformers.trainer", "torch", "OptimizerStateOnCpu: the module's torch.load, replaced during a resume"),
    Imported("transformers.trainer_utils", "rotate_checkpoints", "StagedCheckpoints"),
    Imported("transformers.trainer_utils", "TrainOutput", "grpo_trainer.py"),
    Imported("transformers.trainer_callback", "ProgressCallback", "callbacks.py, grpo_trainer.py"),
    Imported("transformers.modeling_outputs", "CausalLMOutputWithPast", "shared_prompts.py"),
    Imported("transformers.utils", "get_json_schema", "tools.py"),
    Imported("transformers.integrations", "unset_hf_deepspeed_config", "models.py"),
    Imported("transformers.integrations.deepspeed", "is_deepspeed_zero3_enabled", "models.py"),
    Imported("accelerate.utils", "gather_object", "trainer_hooks.py"),
    Imported("accelerate.utils", "DeepSpeedPlugin", "models.py"),
    Imported("accelerate.commands.launch", "launch_command", "accelerate_launch.py"),
    Imported("accelerate.commands.launch", "launch_command_parser", "accelerate_launch.py"),
    Imported("accelerate.commands.config.config_args", "load_config_from_file", "plan/sharding.py"),
)


def render(function) -> str:
    """A function's parameters after `self`, names only: `(model, *args, batch, **kwargs)`."""
    names = []
    for parameter in list(inspect.signature(function).parameters.values()):
        if parameter.name == "self":
            continue
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        names.append(prefix + parameter.name)
    return f"({', '.join(names)})"


def matches(installed: str, declared: str) -> bool:
    """Whether the installed parameters are the declared ones (or begin with them, for a declaration ending in ...)."""
    if declared.endswith(", ...)"):
        return installed.startswith(declared[:-len("...)")]) or installed == declared[:-len(", ...)")] + ")"
    return installed == declared


def trainer_sources(trainer_class) -> str:
    """The source of every library class the trainer is made of (not the tool's own mixins)."""
    texts = []
    for cls in trainer_class.__mro__:
        if cls.__module__.split(".")[0] in ("trl", "transformers", "unsloth", "unsloth_zoo"):
            try:
                texts.append(inspect.getsource(cls))
            except (OSError, TypeError):  # a class made at run time (Unsloth compiles its own): nothing to read
                continue
    return "\n".join(texts)


def installed() -> dict[str, str]:
    import transformers
    import trl

    return {"trl": trl.__version__, "transformers": transformers.__version__}


def versions(found: dict[str, str] | None = None) -> str:
    """`trl 1.14.2, transformers 5.17.0`: the installed versions, or those given."""
    return ", ".join(f"{name} {version}" for name, version in (installed() if found is None else found).items())


def unusable() -> str | None:
    """Why the installed TRL cannot train here, or None. TRL 1.15.0 computes every log-probability with a Triton kernel
    and has no other way (its module keeps None where Triton is missing, as in torch's CPU builds); 1.14.2 and 1.16.0
    compute them without Triton."""
    import trl
    import trl.trainer.utils as utils

    if hasattr(utils, "add_fused_lm_head") and vars(utils).get("_ChunkedLogProbFunction", utils) is None:
        return (f"trl {trl.__version__} computes log-probabilities with a Triton kernel, and Triton is not installed "
                f"here (it comes with CUDA builds of torch): install trl=={TESTED['trl']}, as requirements.txt pins it")
    return None


def warn_if_moved() -> list[str]:
    """On versions other than TESTED: what moved, logged as one warning (nothing to do on the tested versions)."""
    if installed() == TESTED:
        return []
    found = moved()
    if found:
        logger.warning("this tool was written against %s; on %s, what it relies on inside them has moved, so the jobs "
                       "named below may not apply (pin %s to be sure):\n  %s",
                       versions(TESTED), versions(),
                       " and ".join(f"{name}=={version}" for name, version in TESTED.items()), "\n  ".join(found))
    return found


def moved(trainer_class=None) -> list[str]:
    """What of the declared surface the installed libraries no longer have as declared, one line each (empty: all
    there). `trainer_class` defaults to trl.GRPOTrainer (Unsloth's, when Unsloth has put it in TRL's place)."""
    if trainer_class is None:
        import trl

        trainer_class = trl.GRPOTrainer
    found, here = [], versions()
    for method in METHODS:
        function = getattr(trainer_class, method.name, None)
        if function is None:
            found.append(f"{trainer_class.__name__}.{method.name} is gone in {here} (used by {method.used_by})")
        elif not matches(render(function), method.parameters):
            found.append(f"{trainer_class.__name__}.{method.name} takes {render(function)} in {here}, not "
                         f"{method.parameters} (used by {method.used_by})")
    source = trainer_sources(trainer_class)
    for attribute in ATTRIBUTES:
        if not re.search(rf"self\.{attribute.name}\s*(:[^=\n]*)?=", source):
            found.append(f"{trainer_class.__name__} no longer sets self.{attribute.name} in {here} (used by "
                         f"{attribute.used_by})")
    for imported in IMPORTED:
        try:
            module = importlib.import_module(imported.module)
        except ImportError:
            module = None
        if module is None or not hasattr(module, imported.name):
            found.append(f"{imported.module}.{imported.name} is gone in {here} (used by {imported.used_by})")
    return found
