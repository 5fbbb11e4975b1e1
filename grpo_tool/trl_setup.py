"""Our config as TRL's arguments, and TRL's GRPOTrainer with checkpoints that are always whole. Heavy: imported only
after backend.prepare (see grpo_tool/__init__.py).

    from grpo_tool.backend import prepare
    config = GRPOConfig(model_name="tiny", gradient_checkpointing=False, trl_options={"scale_rewards": "batch"})
    args = trl_arguments(config, prepare(config), model=None, evaluate=True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import torch
import trl
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import rotate_checkpoints
from trl.trainer.utils import RepeatSampler

from config import GRPOConfig, resolved_eval_group_size
from errors import UserError
from grpo_tool.backend import CHECKPOINTING_MIN_PARAMETERS, Machine
from grpo_tool.base_view import BaseView, completion_logps, per_completion
from grpo_tool.models import model_parameters
from grpo_tool.outputs import CHECKPOINT_PREFIX, STAGING_DIR, no_space_message
from grpo_tool.places import out_of_space
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
        checkpointing = machine.cuda and model is not None and model_parameters(model) >= CHECKPOINTING_MIN_PARAMETERS
    arguments = dict(
        output_dir=config.output_dir, learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps, per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, num_generations=config.group_size,
        num_generations_eval=resolved_eval_group_size(config), max_completion_length=config.max_completion_length,
        temperature=config.temperature, top_p=config.top_p, beta=config.beta, loss_type=config.loss_type,
        seed=config.seed, bf16=machine.bf16, gradient_checkpointing=checkpointing,
        logging_steps=config.logging_steps, eval_strategy="steps" if evaluate else "no", eval_steps=config.eval_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        report_to=(configure_wandb(config) + (["tensorboard"] if config.tensorboard else [])) if trackers else [],
        dataloader_pin_memory=machine.cuda,
        use_cpu=not machine.cuda,  # also what lets several CPU processes train together over gloo
        ddp_find_unused_parameters=False,  # every trainable parameter takes part in each step's loss
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


class LongestFirstSampler(torch.utils.data.Sampler):
    """TRL's RepeatSampler with the longest prompts in the first generation batch, so a run that cannot fit in
    memory fails at its first step. The prompts trade places across the whole order, so each is still seen as often
    as before; the order is the same in every process and after a resume (same seed, same lengths)."""

    def __init__(self, sampler, lengths: list[int]):
        self.sampler, self.lengths, self.first_pass = sampler, lengths, True

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        order = list(self.sampler)
        if self.first_pass:
            self.first_pass = False
            order = self.longest_first(order)
        return iter(order)

    def longest_first(self, order: list[int]) -> list[int]:
        first = list(dict.fromkeys(order))[:self.sampler.batch_size]  # the first generation batch's prompts
        longest = sorted(range(len(self.lengths)), key=lambda index: -self.lengths[index])[:len(first)]
        leaving = [index for index in first if index not in longest]
        coming = [index for index in longest if index not in first]
        swap = {**dict(zip(leaving, coming)), **dict(zip(coming, leaving))}
        return [swap.get(index, index) for index in order]


class StagedCheckpointGRPOTrainer(trl.GRPOTrainer):
    """TRL's GRPOTrainer, writing each checkpoint into {output_dir}/.staging/ and renaming it into place only once it
    is complete, so a checkpoint-N directory is always whole: a kill at any moment leaves the last one usable."""

    staging = False
    longest_first: list[int] | None = None  # training prompts' lengths in tokens: the longest go first
    base_view: BaseView | None = None  # the starting model, for eval_base_nll and eval_base_drift

    def _generate_and_score_completions(self, inputs):
        """TRL's batch, and at evaluation how its completions look to the starting model (grpo_tool/base_view.py):
        base_nll and base_drift, logged as eval_base_nll and eval_base_drift. Every process scores its share; the
        sums are reduced so each process logs the same figure."""
        batch = super()._generate_and_score_completions(inputs)
        if self.model.training or self.base_view is None or not self.base_view.available:
            return batch
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        completion_mask = batch["completion_mask"]
        try:
            policy, base = completion_logps(self.accelerator.unwrap_model(self.model), self.base_view, ids, mask,
                                            completion_mask.size(1), self.args.per_device_eval_batch_size)
        except (RuntimeError, AttributeError, TypeError) as error:  # a model whose forward we cannot score this way
            logger.warning("base-model measure failed, so it is off for the rest of the run (evaluation and training "
                           "go on): %s: %s", type(error).__name__, str(error).splitlines()[0][:300])
            self.base_view = None
            return batch
        nll, drift = per_completion(policy, base, completion_mask)  # each completion weighs the same
        sums = torch.stack([nll.sum(), drift.sum(), torch.tensor(float(len(nll)), device=nll.device)])
        sums = self.accelerator.reduce(sums, reduction="sum")
        self._metrics["eval"]["base_nll"].append((sums[0] / sums[2]).item())
        self._metrics["eval"]["base_drift"].append((sums[1] / sums[2]).item())
        return batch

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if self.longest_first and isinstance(sampler, RepeatSampler) \
                and len(self.longest_first) == sampler.num_samples:
            return LongestFirstSampler(sampler, self.longest_first)
        return sampler
    merge_lora_for_generation = False  # set by trl_setup.build_trl_trainer

    def _generate_single_turn(self, *args, **kwargs):
        """Sampling with the LoRA update folded into the weights: one matmul per layer instead of three (the base,
        then A and B), which on a CPU is most of a step's generation time. Unfolded right after, so training and
        log-probabilities see the adapter as usual; in fp32 the round trip changes a weight by about one unit in
        the last place."""
        if not self.merge_lora_for_generation:
            return super()._generate_single_turn(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        model.merge_adapter()
        try:
            return super()._generate_single_turn(*args, **kwargs)
        finally:
            model.unmerge_adapter()

    def create_model_card(self, *args, **kwargs):
        """TRL writes a placeholder README.md (model "None") into the output dir at each checkpoint; the tool writes
        its own model card into final_model/ from the run record instead."""

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None or self.args.world_size == 1 or self.args.device.type != "cpu":
            return super()._load_optimizer_and_scheduler(checkpoint)
        # With several CPU processes, transformers 5.17 maps the optimizer state onto args.device, "cpu:N", which
        # torch cannot restore to; on a CPU every process's state belongs on plain "cpu".
        original_load = torch.load

        def load_on_cpu(*args, **kwargs):
            kwargs["map_location"] = "cpu"
            return original_load(*args, **kwargs)

        torch.load = load_on_cpu
        try:
            return super()._load_optimizer_and_scheduler(checkpoint)
        finally:
            torch.load = original_load

    def _init_training_state(self, max_steps, *args, **kwargs):
        """transformers takes a resumed checkpoint's logging, evaluation and save intervals over the run's own; the
        run's own apply, as its record says."""
        trained = super()._init_training_state(max_steps, *args, **kwargs)
        self.state.compute_steps(self.args, max_steps)
        return trained

    def _get_output_dir(self, trial):
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self.staging else run_dir

    def _save_checkpoint(self, model, trial):
        run_dir = super()._get_output_dir(trial)
        name = f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        staged, final = os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name)
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)  # what a killed save left behind
        self.accelerator.wait_for_everyone()
        self.staging = True
        try:
            super()._save_checkpoint(model, trial)
        except BaseException as error:  # a second Ctrl-C or a full disk: the half-written copy goes
            full = isinstance(error, Exception) and out_of_space(error, staged)
            if self.args.should_save:
                shutil.rmtree(staged, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(run_dir, STAGING_DIR))
            if full:
                raise UserError(no_space_message(run_dir, name)) from None
            raise
        finally:
            self.staging = False
        best = self.state.best_model_checkpoint
        if best and os.path.dirname(best) == os.path.join(run_dir, STAGING_DIR):
            # transformers named the best checkpoint where it was being written; it lives in the output dir.
            self.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(best))
            if self.args.should_save:
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()  # every process has written its part (RNG states are per process)
        if self.args.should_save:
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(staged, final)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(run_dir, STAGING_DIR))  # only when empty: nothing is left half-written
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit, use_mtime=True,
                               best_model_checkpoint=self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()
