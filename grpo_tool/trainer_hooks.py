"""TRL's GRPOTrainer with the tool's jobs, one mixin for each, named for what it does and overriding the TRL or
transformers hook a reader of their code knows. `GRPOTrainerWithHooks` puts them together; grpo_trainer.py builds it.
Heavy: imported only after backend.prepare (see grpo_tool/__init__.py).

- StagedCheckpoints (`_save_checkpoint`, `_get_output_dir`): a checkpoint-N folder is always whole;
- RunIntervalsOnResume (`_init_training_state`): a resumed run keeps its own logging, evaluation and save intervals;
- OptimizerStateOnCpu (`_load_optimizer_and_scheduler`): several CPU processes can resume their optimizer state;
- LoraMergedForGeneration (`_generate_single_turn`): sampling with the adapter folded into the weights;
- LongestPromptsFirst (`_get_train_sampler`): the first generation batch holds the longest prompts;
- BaseModelMeasure (`_generate_and_score_completions`): eval_base_nll and eval_base_drift at evaluations;
- OwnModelCard (`create_model_card`): no placeholder README.md at each checkpoint.

    sampler = LongestFirstSampler(RepeatSampler(list(range(6)), mini_repeat_count=2, batch_size=2, seed=0),
                                  [1, 9, 2, 8, 3, 4])
    assert set(list(sampler)[:4]) == {1, 3}
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil

import torch
import trl
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import rotate_checkpoints
from trl.trainer.utils import RepeatSampler

from grpo_tool import metrics
from grpo_tool.base_view import BaseView, completion_logps, per_completion
from grpo_tool.errors import UserError
from grpo_tool.outputs import CHECKPOINT_PREFIX, STAGING_DIR, no_space_message
from grpo_tool.places import out_of_space

logger = logging.getLogger(__name__)


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


class StagedCheckpoints(trl.GRPOTrainer):
    """Each checkpoint is written into {output_dir}/.staging/ and renamed into place only once it is complete, so a
    checkpoint-N directory is always whole: a kill at any moment leaves the last one usable."""

    staging = False

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


class RunIntervalsOnResume(trl.GRPOTrainer):
    def _init_training_state(self, max_steps, *args, **kwargs):
        """transformers takes a resumed checkpoint's logging, evaluation and save intervals over the run's own; the
        run's own apply, as its record says."""
        trained = super()._init_training_state(max_steps, *args, **kwargs)
        self.state.compute_steps(self.args, max_steps)
        return trained


class OptimizerStateOnCpu(trl.GRPOTrainer):
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


class LoraMergedForGeneration(trl.GRPOTrainer):
    merge_lora_for_generation = False  # set by grpo_trainer.py (trl_setup.merges_lora_for_generation)

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


class LongestPromptsFirst(trl.GRPOTrainer):
    longest_first: list[int] | None = None  # training prompts' lengths in tokens: the longest go first

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if self.longest_first and isinstance(sampler, RepeatSampler) \
                and len(self.longest_first) == sampler.num_samples:
            return LongestFirstSampler(sampler, self.longest_first)
        return sampler


class BaseModelMeasure(trl.GRPOTrainer):
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
        self._metrics["eval"][metrics.BASE_NLL].append((sums[0] / sums[2]).item())
        self._metrics["eval"][metrics.BASE_DRIFT].append((sums[1] / sums[2]).item())
        return batch


class OwnModelCard(trl.GRPOTrainer):
    def create_model_card(self, *args, **kwargs):
        """TRL writes a placeholder README.md (model "None") into the output dir at each checkpoint; the tool writes
        its own model card into final_model/ from the run record instead."""


class GRPOTrainerWithHooks(StagedCheckpoints, RunIntervalsOnResume, OptimizerStateOnCpu, LoraMergedForGeneration,
                           LongestPromptsFirst, BaseModelMeasure, OwnModelCard):
    """TRL's GRPOTrainer with every job above."""
