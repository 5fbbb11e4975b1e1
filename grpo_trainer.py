"""The project's GRPOTrainer: a thin front that takes a run through its steps in order, each step one call into the
module that owns it. TRL's GRPOTrainer of the same name runs the loop inside.

The steps: config → rewards resolved once (rewards) → data read and checked (data_loader) → model loaded
(grpo_tool.backend, grpo_tool.models) → data prepared for the model (prompt_budget) → TRL trainer built
(grpo_tool.trl_setup, grpo_tool.callbacks) → run record written (grpo_tool.outputs) → train → save.

    config = GRPOConfig(model_name="tiny", dataset_name="sample", max_samples=16, max_eval_samples=4, max_steps=2,
                        group_size=4, gradient_accumulation_steps=1, max_completion_length=16, output_dir="api_run")
    trainer = GRPOTrainer(config); data = trainer.load_data(); trainer.load_model()
    assert trainer.train(data).global_step == 2 and Path("api_run/run_record.json").is_file()
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import shutil
import time
from pathlib import Path

from config import describe_batch, steps_problem, validate_config
from data_loader import as_dataset_dict
from grpo_tool import backend, group_choice, metrics, outputs, run_dir, run_record, tools, trl_surface
from grpo_tool.checkpoints import (
    adapter_problem,
    at_last_step,
    changed_settings_problem,
    checkpoint_kind_problem,
    complete_checkpoints,
    finished_problem,
    model_problem,
    no_space_message,
    replace_directory,
    resolve_checkpoint,
    saved_step,
)
from grpo_tool.components import REWARD_MODEL
from grpo_tool.console import attach_log_file
from grpo_tool.errors import Interrupted, UserError
from grpo_tool.held_out import answer_check_for, held_out_names
from grpo_tool.json_files import write_json_atomic, write_text_atomic
from grpo_tool.launch import engine_of, is_main_process, launcher_says
from grpo_tool.metrics import best_metric
from grpo_tool.places import out_of_space
from grpo_tool.prompt_budget import fit_to_model
from grpo_tool.reward_config import reward_config_choice
from grpo_tool.reward_guard import held_out
from grpo_tool.scoring import build_reward_functions
from grpo_tool.settings import GRPOConfig, resolved_eval_samples, settings_record
from rewards import (
    check_code_tests,
    check_references,
    describe_rewards,
    eval_components,
    log_missing_references,
    resolve_rewards,
)

__all__ = ["GRPOConfig", "GRPOTrainer", "TrainingInterrupted"]

# TRL phones home unless told not to; an offline training machine gains nothing from the attempt.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# TRL warns at every trainer built with environments that it marks them experimental; the README says so once.
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C / SIGTERM once the checkpoint of the interrupted step is on disk."""

    def __init__(self, step: int, checkpoint: str | None, signal_number: int):
        self.step, self.checkpoint, self.signal_number = step, checkpoint, signal_number
        super().__init__(f"interrupted at step {step}")


class GRPOTrainer:
    """GRPO training of one model on one dataset with the configured rewards."""

    def __init__(self, config: GRPOConfig | None = None, callbacks: list | None = None):
        """`callbacks`: extra transformers TrainerCallbacks, added to the tool's own."""
        if config is not None and not isinstance(config, GRPOConfig):
            raise UserError(f"GRPOTrainer takes a GRPOConfig, got {type(config).__name__} {config!r:.60}: build one "
                            "with config.build_config(overrides={'model_name': 'tiny'}) or GRPOConfig(model_name=...)")
        self.config = config or GRPOConfig()
        self.callbacks = list(callbacks or [])
        validate_config(self.config)
        # The tools, the environments, the reward config and every --reward-fn file, imported here and never again.
        self.toolbox = tools.resolve(self.config)
        self.code_sandbox: str | None = None  # the code sandbox's line, once load_data has checked it
        if self.toolbox.active:
            logger.info("%s; at most %d rounds of calls a completion, each call stopped after %g s",
                        self.toolbox.describe(), self.config.max_tool_calls, self.config.tool_timeout)
        self.reward_config, self.components = resolve_rewards(self.config, self.toolbox.rewards)
        self.eval_components = eval_components(self.config.eval_reward_functions, self.components)
        self.best_metric = best_metric(self.config.metric_for_best_model, self.components + self.eval_components,
                                       held_out_names(self.components, resolved_eval_samples(self.config)))
        reward_model_weight = self.reward_config["reward_model_weight"] if self.config.reward_model else None
        logger.info("rewards: %s", describe_rewards(self.config, self.components, reward_model_weight))
        self.machine = None
        self.model = self.tokenizer = self.model_path = None
        self.trainer = None
        self.interrupt = None
        self.record = None
        self.replacing: list[str] | None = None  # set by check_output_dir: an earlier run's entries to replace
        self.checked: dict[str, str | None] = {}  # set by check_arguments: {"checkpoint": the one to resume}
        self.loaded = None  # the data load_data read and checked
        self.prompt_lengths: dict = {}  # tokens of each prompt by split, and system_prompt's reach (fit_to_model)

    # The modules that import torch, transformers, trl and peft are imported in the methods below, after
    # backend.prepare has imported Unsloth where it is the backend (the rule is in grpo_tool/__init__.py).

    def check_output_dir(self) -> list[str]:
        """One run per output dir. Returns the earlier run's entries that --overwrite-output-dir replaces. Made in
        every process before any writes (the command line does it first), so that every process stops on the same
        mistake; train() makes it in the main process only when its caller has not (the others could otherwise see
        the main one's fresh run record as an earlier run's)."""
        self.replacing = run_dir.check_output_dir(self.config)
        return self.replacing

    def check_arguments(self, training: bool = True) -> str | None:
        """Before any model loads: TRL's arguments built from the config (a value TRL refuses is one line here, not
        a failure at the first step), and for training, the checkpoint to resume checked against the run: its kind
        (LoRA or full weights), its model's shape and its adapter's, the settings it fixes, and whether anything is
        left to do. Returns the checkpoint (or None)."""
        self.machine = self.machine or backend.prepare(self.config)
        from grpo_tool import trl_setup  # after backend.prepare: Unsloth, where it is the backend, comes first

        arguments = trl_setup.effective_arguments(trl_setup.trl_arguments(self.config, self.machine, None,
                                                                          evaluate=True, trackers=False))
        checkpoint = resolve_checkpoint(self.config.resume_from_checkpoint, self.config.output_dir)
        if not training:
            return checkpoint  # an evaluation loads the checkpoint as it is
        if checkpoint is not None and (problem := self.resume_problem(checkpoint, arguments)):
            raise UserError(problem)
        self.checked = {"checkpoint": checkpoint}  # train() takes it as checked
        return checkpoint

    def resume_problem(self, checkpoint: str, arguments: dict) -> str | None:
        """Why the checkpoint cannot continue this run: its kind (LoRA or full weights), its model's shape and its
        adapter's, whether anything is left to do, and the settings it fixes."""
        return (checkpoint_kind_problem(checkpoint, self.config.use_lora)
                or model_problem(checkpoint, self.config.model_name)
                or adapter_problem(checkpoint, self.config)
                or finished_problem(checkpoint, self.config.max_steps)
                or changed_settings_problem(checkpoint, arguments))

    def load_model(self, path: str | None = None):
        """Load the tokenizer and model (the configured one, or a saved model / checkpoint directory at `path`), and
        the reward model when one is configured."""
        self.machine = self.machine or backend.prepare(self.config)
        from grpo_tool import models

        self.model, self.tokenizer, self.model_path = models.load_policy(self.config, self.machine, path)
        # The reward model comes second: Unsloth patches a model family's classes in place when it loads the policy,
        # and a reward model of that family built before the patch would meet Unsloth's forward with transformers'
        # own rotary embedding at its first call.
        if self.config.reward_model and not any(c.name == REWARD_MODEL for c in self.components):
            weight = float(self.reward_config["reward_model_weight"])
            self.components.append(models.load_reward_model(self.config, self.machine, weight))
        return self.model, self.tokenizer

    def load_data(self, dataset=None):
        """The data as a DatasetDict of train and eval: `dataset` (a DatasetDict, a Dataset or the (data_loader,
        dataset) pair), or the configured data when None. Needs no model, so the command line reads and checks the
        data (its rows, its columns against the rewards) before any model loads; a mistake there costs no load. A
        model this machine cannot run is refused first, before a hub dataset downloads."""
        backend.check_machine(self.config)
        data = as_dataset_dict(dataset, self.config)
        for split in ("train", "eval"):
            if problem := tools.column_problem(self.toolbox, data[split], split):
                raise UserError(problem)
        check_references(self.components, self.reward_config, data)
        self.check_held_out(data["eval"])
        if line := check_code_tests(self.components, self.reward_config, data):
            self.code_sandbox = line
            logger.info(line)
        self.loaded = data  # what prepare_data may take as checked
        return data

    def check_held_out(self, rows) -> None:
        """A best checkpoint chosen by pass@ or maj@ needs references in the evaluation rows (--eval-data may be
        another file than the training data)."""
        metric = self.best_metric[0] if self.best_metric else ""
        if metric in held_out_names(self.components, resolved_eval_samples(self.config)) and \
                answer_check_for(self.components, self.reward_config["answer_match"], rows.column_names) is None:
            raise UserError(f"metric_for_best_model={self.config.metric_for_best_model} grades the evaluation rows' "
                            f"answers, and they have no reference column (columns: {', '.join(rows.column_names)}): "
                            "set answer_match.reference_column in the reward config, or evaluate on answer-checked "
                            "data")

    def prepare_data(self, dataset=None):
        """The data as the model takes it (see load_data for `dataset`), with prompts in the model's form and token
        budget."""
        data = dataset if dataset is not None and dataset is self.loaded else self.load_data(dataset)
        if self.model is None:
            self.load_model()
        self.prompt_lengths = {}
        data = fit_to_model(data, self.tokenizer, self.config, self.prompt_lengths, self.toolbox.all_tools())
        log_missing_references(self.components, self.reward_config, data)
        return data

    def build_trainer(self, data, evaluate: bool, log_dir: str | None = None):
        """TRL's trainer with our rewards and callbacks; generation logs go to `log_dir` (default: the run's)."""
        from transformers.trainer_callback import ProgressCallback

        from generation_logger import GenerationLoggingCallback
        from grpo_tool import callbacks, models, sampling, shared_prompts, trainer_hooks, trl_setup
        from grpo_tool.base_view import BaseView, choose_base

        config = self.config
        view = BaseView()  # the starting model, chosen once TRL's trainer (and its reference model) exists
        functions, weights = build_reward_functions(self.components, config.reward_function_type)
        # Held-out scores: weight 0 and scored at evaluations only (the training trainer is known once it exists).
        built: dict = {}
        functions += [held_out(c, lambda: built.get("trainer") is None or built["trainer"].model.training)
                      for c in self.eval_components]
        weights += [0.0] * len(self.eval_components)
        args = trl_setup.trl_arguments(config, self.machine, self.model, evaluate)
        args.reward_weights = weights
        models.deepspeed_comm_on_cpu(self.machine)
        if self.best_metric and evaluate:
            args.metric_for_best_model, args.greater_is_better = self.best_metric
        hooks = [callbacks.MetricsLogCallback()]
        logging_on = config.enable_generation_logging and config.max_generation_samples > 0
        if logging_on:
            sampler = sampling.probe_sampler(config, data["eval"], self.components, view, self.toolbox)
            hooks.append(GenerationLoggingCallback(sampler, log_dir or config.effective_generation_log_dir))
        alarms = callbacks.AlarmCallback(
            weights={c.name: c.weight for c in self.components}, max_completion_length=config.max_completion_length,
            generation_log_dir=(log_dir or config.effective_generation_log_dir) if logging_on else None,
            zero_variance_groups=group_choice.resolved_mode(config.zero_variance_groups, self.machine.backend,
                                                            config.streaming),
            learning_rate=config.learning_rate, temperature=config.temperature, beta=config.beta,
            max_grad_norm=args.max_grad_norm)
        hooks.append(alarms)
        self.interrupt = callbacks.InterruptCallback()
        if problem := trl_surface.unusable():
            raise UserError(problem)
        try:
            self.trainer = trainer_hooks.GRPOTrainerWithHooks(
                model=self.model, reward_funcs=functions, args=args, train_dataset=data["train"],
                eval_dataset=data["eval"] if evaluate else None, processing_class=self.tokenizer,
                callbacks=[*hooks, self.interrupt, *self.callbacks], **self.toolbox.trainer_arguments())
        except Exception as error:  # passed on unless an option of TRL's own may be the cause
            if refused := trl_setup.options_refused(config, error, "to build its trainer"):
                raise refused from None
            raise
        built["trainer"] = self.trainer
        if is_main_process():
            trl_surface.warn_if_moved()
        self.trainer.alarm_watch = alarms
        if launcher_says("ACCELERATE_USE_FSDP") and not self.trainer.is_fsdp_enabled and is_main_process():
            # accelerate's AcceleratorState turns FSDP on only for accelerator devices (state.py, the MULTI_GPU family);
            # with use_cpu the state is MULTI_CPU and the launcher's FSDP settings are dropped without a word.
            logger.warning("launched under FSDP, but accelerate did not turn it on (it does so only on GPUs and other "
                           "accelerators): every process holds the whole model, as with DDP")
        if cast := trl_setup.keep_trainable_weights_in_fp32(self.model):
            logger.info("kept %d trainable weight tensors in float32 (TRL had cast them to 16 bits)", cast)
        self.trainer.merge_lora_for_generation = trl_setup.merges_lora_for_generation(config, self.machine, self.model)
        prompts = len(data["train"]) if hasattr(data["train"], "__len__") else 0
        try:
            self.trainer.sharing = shared_prompts.plan(config.share_prompts, self.machine.backend if self.machine
                                                       else None, self.trainer)
        except ValueError as error:  # share_prompts true where it cannot apply
            raise UserError(str(error)) from None
        self.trainer.groups = group_choice.policy_for(config, self.machine.backend if self.machine else None, prompts)
        if evaluate:
            choose_base(view, self.model, self.trainer, lambda: models.load_base_copy(config, self.machine))
            self.trainer.base_view = view
            self.trainer.answer_check = answer_check_for(self.components, self.reward_config["answer_match"],
                                                         data["eval"].column_names)
            self.trainer.eval_temperature = config.eval_temperature
        if self.trainer.pop_callback(ProgressCallback) is not None:
            self.trainer.add_callback(callbacks.ConsoleProgressCallback([c.name for c in self.components if c.weight]))
        return self.trainer

    def run_record(self, data=None) -> dict:
        """What this run is, for the output dir and for every later reader (report, model card)."""
        config = self.config
        record = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": config.model_name, "model_path": self.model_path,
            "backend": self.machine.backend if self.machine else None,
            "backend_reason": self.machine.reason if self.machine else None,
            "machine": self.machine.used if self.machine else None,
            "use_lora": config.use_lora, "data": config.custom_data or config.dataset_name,
            "reward_function_type": config.reward_function_type,
            "reward_config": reward_config_choice(config) or "none: the run's own rewards",
            "components": {c.name: c.weight for c in self.components},
            "eval_rewards": [c.name for c in self.eval_components],
            "eval_samples": resolved_eval_samples(config),
            "zero_variance_groups": group_choice.resolved_mode(config.zero_variance_groups, self.machine.backend
                                                               if self.machine else None, config.streaming),
            "config": settings_record(config),
        }
        if self.toolbox.active:
            record["tools"] = {**self.toolbox.specs, "max_tool_calls": config.max_tool_calls,
                               "tool_timeout": config.tool_timeout, "said": self.toolbox.describe()}
        if self.code_sandbox:
            record["code_tests"] = {**self.reward_config["code_tests"], "said": self.code_sandbox}
        if self.trainer is not None:
            record["launch"] = {"processes": self.trainer.accelerator.num_processes,
                                "engine": engine_of(self.trainer),  # as accelerate set it up, not as asked
                                "machines": int(os.environ.get("GROUP_WORLD_SIZE", "1") or 1)}
            record["shared_prompts"] = {"generation": self.trainer.sharing.generation,
                                        "log_probabilities": self.trainer.sharing.scoring,
                                        "said": self.trainer.sharing.line}
        if data is not None and hasattr(data["train"], "__len__"):
            record["prompts"] = {"train": len(data["train"]), "eval": len(data["eval"])}
            if "system_prompt" in self.prompt_lengths:  # training prompts it went before (the others had their own)
                record["prompts"]["system_prompt"] = self.prompt_lengths["system_prompt"][0]
        if self.trainer is not None:
            from grpo_tool.trl_setup import effective_arguments

            record["trl_arguments"] = effective_arguments(self.trainer.args)
        return record

    def write_run_record(self, data, replacing: list[str] = ()) -> None:
        """The log file, the effective configs and the run record, before the first step (main process only); with
        --overwrite-output-dir the earlier run's entries (`replacing`) go first."""
        self.record = self.run_record(data)
        if not is_main_process():
            return
        if replacing:
            run_dir.remove_previous_run(self.config.output_dir, replacing)
            logger.info("replaced the earlier run in %s (%s)", self.config.output_dir, ", ".join(replacing))
        log_path = attach_log_file(Path(self.config.output_dir) / outputs.LOG_FILE)
        logger.info("logging to %s", log_path)
        logger.info(group_choice.describe(self.trainer.groups if self.trainer else None))
        if self.trainer is not None:
            logger.info(describe_batch(self.config, self.trainer.accelerator.num_processes,
                                       self.trainer.args.steps_per_generation))
            logger.info(self.trainer.sharing.line)
        run_record.write_run_record(self.config.output_dir, self.record["config"], self.reward_config, self.record)
        # What a killed run left half-written; nothing reads it.
        shutil.rmtree(Path(self.config.output_dir) / outputs.STAGING_DIR, ignore_errors=True)

    def train(self, dataset=None):
        """Run GRPO. `dataset`: a DatasetDict (train/eval), a Dataset, the (data_loader, dataset) pair, or None to load
        the configured data. Raises TrainingInterrupted after saving a checkpoint when stopped by Ctrl-C / SIGTERM."""
        # Each check once: the command line has made them already, a Python caller may not have.
        if self.replacing is None:
            self.replacing = self.check_output_dir() if is_main_process() else []
        checkpoint = self.checked["checkpoint"] if self.checked else self.check_arguments()
        data = self.prepare_data(dataset)
        if hasattr(data["train"], "__len__") and (problem := steps_problem(self.config, len(data["train"]))):
            raise UserError(problem)
        self.build_trainer(data, evaluate=len(data["eval"]) > 0)
        self.check_memory()
        self.write_run_record(data, self.replacing)
        return self.fit(checkpoint)

    def check_memory(self) -> None:
        """Before the first step: --plan's arithmetic on this model, data and machine, a warning when the run will
        not fit (the longest prompts go first, so such a run fails at its first step, not its hundredth)."""
        from grpo_tool.plan.fitting import run_check

        lengths = self.prompt_lengths.get("train")
        self.trainer.longest_first = lengths
        run_check(self.config, self.machine, self.model.config, max(lengths) if lengths else None)

    def fit(self, checkpoint: str | None = None):
        """TRL's training loop, with Ctrl-C / SIGTERM turned into a checkpoint and TrainingInterrupted."""
        from grpo_tool.callbacks import close_progress_bars

        if checkpoint and at_last_step(checkpoint, self.config.max_steps):
            return self.finish_from(checkpoint)
        # Everything built so far (libraries, model, data) lives as long as the run: out of the cyclic garbage
        # collector's sight, so its passes during training scan only what training allocates.
        gc.collect()
        gc.freeze()
        self.interrupt.install()
        try:
            result = self.trainer.train(resume_from_checkpoint=checkpoint)
        except KeyboardInterrupt:
            close_progress_bars(self.trainer)
            checkpoints = complete_checkpoints(self.config.output_dir)
            raise Interrupted(f"stopped at once at step {self.trainer.state.global_step} by a second Ctrl-C; no "
                              "half-written checkpoint is left in place; the last complete one is "
                              f"{checkpoints[-1] if checkpoints else 'none'}") from None
        except tools.ToolStop as stop:  # a tool's sys.exit, an episode that could not start or be scored
            close_progress_bars(self.trainer)
            raise UserError(str(stop)) from None
        except BaseException as error:
            close_progress_bars(self.trainer)  # so an error message starts on a line of its own
            if isinstance(error, Exception) and not isinstance(error, UserError) and out_of_space(error):
                # A generation log, the alarms or the log file could not be written: the checkpoints still stand.
                raise UserError(no_space_message(self.config.output_dir, "the run's files")) from None
            first_step = self.trainer.state.global_step == 0
            if isinstance(error, Exception) and not isinstance(error, UserError) and first_step:
                from grpo_tool.trl_setup import options_refused

                if refused := options_refused(self.config, error, "at the first step"):
                    raise refused from None
            raise
        finally:
            self.interrupt.uninstall()
            gc.unfreeze()
        if self.interrupt.signal_name:
            checkpoints = complete_checkpoints(self.config.output_dir)
            raise TrainingInterrupted(self.trainer.state.global_step, str(checkpoints[-1]) if checkpoints else None,
                                      self.interrupt.signal_number)
        return result

    def finish_from(self, checkpoint: str):
        """A run stopped after its last step (during the last evaluation, or the final save): the checkpoint's
        weights and history, the evaluation of that step if it was cut off, and no step trained (transformers would
        train one more)."""
        from transformers import TrainerState
        from transformers.trainer_utils import TrainOutput

        logger.info("%s is at the run's last step: no step is left to train; finishing the run from it", checkpoint)
        trainer = self.trainer
        trainer._load_from_checkpoint(checkpoint)
        trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / outputs.TRAINER_STATE_FILE))
        step = trainer.state.global_step
        evaluated = any(entry.get("step") == step and metrics.EVAL_REWARD in entry
                        for entry in trainer.state.log_history)
        if trainer.eval_dataset is not None and step % self.config.eval_steps == 0 and not evaluated:
            trainer.evaluate()
        return TrainOutput(step, float("nan"), {})

    def evaluate(self, dataset=None, evaluation_dir: str | Path | None = None) -> dict:
        """Generate and score completions for the evaluation prompts. Outside a training run (`--eval-only`) it writes
        only its own files, in `evaluation_dir` (default {output_dir}/evaluation/): eval_metrics.json and the
        generation log."""
        if self.trainer is not None:
            return {**self.trainer.evaluate(), "global_step": self.trainer.state.global_step}
        data = self.prepare_data(dataset)
        evaluation_dir = Path(evaluation_dir or Path(self.config.output_dir) / outputs.EVALUATION_DIR)
        self.build_trainer(data, evaluate=True, log_dir=self.config.generation_log_dir or str(evaluation_dir))
        self.trainer.state.global_step = saved_step(self.model_path) or 0
        metrics = {**self.trainer.evaluate(data["eval"]), "global_step": self.trainer.state.global_step}
        if is_main_process():
            write_json_atomic(evaluation_dir / outputs.EVAL_METRICS_FILE, metrics)
        return metrics

    def save_model(self, output_dir: str | None = None) -> Path:
        """Save the trained weights (the LoRA adapter when LoRA is on), the tokenizer and a model card. Everything is
        written into a sibling folder first and renamed into place, so a Ctrl-C or crash never leaves half a model."""
        if self.trainer is None or self.trainer.state.global_step == 0:
            raise UserError("save_model() saves what train() trained, and nothing has been trained yet: call train() "
                            "first")
        target = Path(output_dir or Path(self.config.output_dir) / outputs.FINAL_MODEL_DIR)
        staging = target.with_name(f".{target.name}.partial")
        try:
            self.write_model(staging)
        except BaseException as error:
            full = isinstance(error, Exception) and out_of_space(error, staging)
            if is_main_process():
                shutil.rmtree(staging, ignore_errors=True)  # never half a model beside the run
            if full:
                raise UserError(no_space_message(self.config.output_dir, "the final model", staging.parent)) from None
            raise
        if is_main_process():
            replace_directory(staging, target)
            logger.info("model saved to %s", target)
            if self.config.save_merged:
                self.save_merged(target)
        return target

    def write_model(self, staging: Path) -> None:
        """The weights, tokenizer, trainer state and model card, into `staging` (main process; every process takes
        part in gathering the weights)."""
        if is_main_process():
            shutil.rmtree(staging, ignore_errors=True)
        if self.trainer.is_fsdp_enabled:
            # With FSDP's SHARDED_STATE_DICT transformers' save_model writes no weights and no config at all (it
            # saves only a FULL_STATE_DICT): checkpoints stay as configured, the final model is whole.
            self.trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        self.trainer.save_model(str(staging))  # every process takes part (sharded weights are gathered)
        if not is_main_process():
            return
        state = self.trainer.state
        # The step and metric history travel with the model (--eval-only reads the step back).
        write_json_atomic(staging / outputs.TRAINER_STATE_FILE, dataclasses.asdict(state))
        self.tokenizer.save_pretrained(staging)
        write_text_atomic(staging / "README.md", run_record.model_card(self.record or self.run_record(),
                                                                       state.log_history, state.global_step))

    def save_merged(self, final: Path) -> None:
        """The merged export, after the trained model is safely in place: a failure there (memory, a base that cannot
        be loaded again) is reported and leaves final/ as it is, with the adapter that can be merged later."""
        from grpo_tool import models

        try:
            models.save_merged(self.config, self.machine, self.tokenizer, final, final / outputs.MERGED_DIR)
        except (UserError, RuntimeError, OSError) as error:
            logger.error("merged export failed, so there is no %s; %s holds the trained adapter as it was saved: %s",
                         final / outputs.MERGED_DIR, final, str(error).strip().splitlines()[0])
