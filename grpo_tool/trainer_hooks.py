"""TRL's GRPOTrainer with the tool's jobs, one mixin for each, named for what it does and overriding the TRL or
transformers hook a reader of their code knows. `GRPOTrainerWithHooks` puts them together; grpo_trainer.py builds it.
Heavy: imported only after backend.prepare (see grpo_tool/__init__.py).

- StagedCheckpoints (`_save_checkpoint`, `_get_output_dir`): a checkpoint-N folder is always whole;
- RunIntervalsOnResume (`_init_training_state`): a resumed run keeps its own logging, evaluation and save intervals;
- OptimizerStateOnCpu (`_load_optimizer_and_scheduler`): several CPU processes can resume their optimizer state;
- LoraMergedForGeneration (`_generate_single_turn`): sampling with the adapter folded into the weights;
- LongestPromptsFirst (`_get_train_sampler`): the first generation batch holds the longest prompts;
- BaseModelMeasure (`_generate_and_score_completions`): eval_base_nll and eval_base_drift at evaluations;
- HeldOutScores (`evaluate`, `_generate_and_score_completions`): evaluations at their own temperature from a seeded
  random state, and pass@1, pass@K and maj@K for answer-checked data (grpo_tool/held_out.py);
- OwnModelCard (`create_model_card`): no placeholder README.md at each checkpoint;
- SharedPrompts (`_get_per_token_logps_and_entropies`, `_generate_single_turn`, `_prepare_inputs`): each group's
  prompt computed once (grpo_tool/shared_prompts.py);
- SignalGroupsOnly (`_generate_and_score_completions`, `_calculate_rewards`): zero_variance_groups and the curriculum
  (grpo_tool/group_choice.py), their state saved with each checkpoint (`_save_checkpoint`) and read back on resume
  (`_load_optimizer_and_scheduler`);
- StepRecords (`_generate_and_score_completions`, `_compute_loss`, `training_step`, `_maybe_log_save_evaluate`): each
  optimizer step's figures for the alarms, whatever logging_steps says (grpo_tool/alarms.py), kept with each
  checkpoint; no entropy, KL or clip ratio logged for a step with no token in its loss.

    sampler = LongestFirstSampler(RepeatSampler(list(range(6)), mini_repeat_count=2, batch_size=2, seed=0),
                                  [1, 9, 2, 8, 3, 4])
    assert set(list(sampler)[:4]) == {1, 3}
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from pathlib import Path

import torch
import transformers.trainer
import trl
from accelerate.utils import gather_object
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import rotate_checkpoints
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import RepeatSampler

from grpo_tool import metrics
from grpo_tool.alarms import completion_shapes, looping, step_record
from grpo_tool.base_view import BaseView, completion_logps, per_completion
from grpo_tool.checkpoints import no_space_message
from grpo_tool.errors import UserError
from grpo_tool.group_choice import GroupPolicy, padded_size, prompt_key, rows_per_process
from grpo_tool.held_out import AnswerCheck, group_scores
from grpo_tool.json_files import write_json_atomic
from grpo_tool.outputs import (
    CHECKPOINT_PREFIX,
    GROUPS_STATE_FILE,
    STAGING_DIR,
    STEP_RECORDS_FILE,
    read_json,
)
from grpo_tool.places import out_of_space
from grpo_tool.shared_prompts import Sharing, forward_shared, generate_shared, regrouped, replaced

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


class TorchLoadingOnCpu:
    """torch as one module sees it, with `torch.load` putting every tensor on the CPU."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        return getattr(self.module, name)

    def load(self, *args, **kwargs):
        return self.module.load(*args, **{**kwargs, "map_location": "cpu"})


class OptimizerStateOnCpu(trl.GRPOTrainer):
    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None or self.args.world_size == 1 or self.args.device.type != "cpu":
            return super()._load_optimizer_and_scheduler(checkpoint)
        # With several CPU processes, transformers 5.17 maps the optimizer state onto args.device, "cpu:N", which
        # torch cannot restore to; on a CPU every process's state belongs on plain "cpu". Only transformers' trainer
        # module sees the change, and only during this call: the `torch` it calls through loads onto the CPU.
        with replaced(transformers.trainer, "torch", TorchLoadingOnCpu):
            return super()._load_optimizer_and_scheduler(checkpoint)


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


class SharedPrompts(trl.GRPOTrainer):
    sharing = Sharing()  # set by grpo_trainer.py (shared_prompts.plan)

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        if not self.sharing.scoring:
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        with forward_shared(self.accelerator.unwrap_model(model)):
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    def _generate_single_turn(self, *args, **kwargs):
        model = self.accelerator.unwrap_model(self.model)
        with contextlib.ExitStack() as stack:
            if self.sharing.cached_sampling:
                stack.enter_context(disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs))
            if self.sharing.generation:
                stack.enter_context(generate_shared(model))
            return super()._generate_single_turn(*args, **kwargs)

    def _prepare_inputs(self, generation_batch):
        generated = self.model.training and (self._buffered_inputs is None or self._step % (
            self.args.steps_per_generation * self.num_iterations) == 0)
        inputs = super()._prepare_inputs(generation_batch)
        if generated and self.sharing.regroup:
            self._buffered_inputs = regrouped(self._buffered_inputs)
            inputs = self._buffered_inputs[self._step % self.args.steps_per_generation]
        return inputs


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


class HeldOutScores(trl.GRPOTrainer):
    answer_check: AnswerCheck | None = None  # set when the run checks answers: pass@1, pass@K and maj@K
    eval_temperature: float | None = None  # None: the training temperature

    def evaluate(self, *args, **kwargs):
        """An evaluation samples at the evaluation temperature from its own seeded random state: every evaluation
        (of a run, of a resumed run, of each checkpoint compared) draws the same random numbers, and training's
        random state is as if no evaluation had run."""
        with evaluation_sampling(self, self.eval_temperature, self.args.seed + self.accelerator.process_index):
            return super().evaluate(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        """TRL's batch, and at evaluation each completion graded as answer_match grades it; the verdicts of every
        process are gathered, so each group of K is whole and every process logs the same figures."""
        batch = super()._generate_and_score_completions(inputs)
        if self.model.training or self.answer_check is None or self.answer_check.column not in inputs[0]:
            return batch
        ids, mask = batch["completion_ids"], batch["completion_mask"].bool()
        texts = [self.processing_class.decode(row[keep], skip_special_tokens=True) for row, keep in zip(ids, mask)]
        verdicts = [self.answer_check.verdict(text, row[self.answer_check.column]) for text, row in zip(texts, inputs)]
        verdicts = gather_object(verdicts)
        scores = group_scores(verdicts, self.num_generations_eval, self.answer_check.tolerance)
        for name, values in scores.items():  # one entry per prompt: TRL's mean over them is the mean over prompts
            self._metrics["eval"][name].extend(values)
        return batch


@contextlib.contextmanager
def evaluation_sampling(trainer, temperature: float | None, seed: int):
    """Within: the trainer samples at `temperature` (TRL's generation config, its vLLM sampler and its log-probability
    scaling read it) from torch's random state seeded with `seed`; both are restored after."""
    holders = [holder for holder in (trainer, getattr(trainer, "generation_config", None),
                                     getattr(trainer, "vllm_generation", None))
               if holder is not None and hasattr(holder, "temperature")]
    saved = [holder.temperature for holder in holders]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        if temperature is not None:
            for holder in holders:
                holder.temperature = temperature
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        for holder, value in zip(holders, saved):
            holder.temperature = value


class OwnModelCard(trl.GRPOTrainer):
    def create_model_card(self, *args, **kwargs):
        """TRL writes a placeholder README.md (model "None") into the output dir at each checkpoint; the tool writes
        its own model card into final_model/ from the run record instead."""


LEFT_PADDED = ("prompt_ids", "prompt_mask")  # TRL pads prompts on the left, what is per completion token on the right
LOSS_MASKS = ("completion_mask", "tool_mask")  # their product says which tokens count in the loss


def loss_mask(batch: dict) -> torch.Tensor:
    """Which tokens of TRL's batch count in the loss: the completion's, less the tool results' (multi-turn)."""
    mask = batch["completion_mask"]
    return mask * batch["tool_mask"] if "tool_mask" in batch else mask


def rows_of(batch: dict, rows: list[int]) -> dict:
    """The given rows of every per-row value of TRL's batch (tensors and lists as long as the batch); the scalars,
    such as num_items_in_batch, are left out: they are worked out again for the rows kept."""
    count, index = len(batch["advantages"]), torch.tensor(rows, dtype=torch.long)
    picked = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.size(0) == count:
            picked[key] = value[index.to(value.device)]
        elif isinstance(value, list) and len(value) == count:
            picked[key] = [value[row] for row in rows]
    return picked


def joined(parts: list[dict], pad_id: int) -> dict:
    """Batches of rows from several generation rounds as one: token tensors of different widths padded as TRL pads
    them (prompts on the left, completions on the right)."""
    batch = {}
    for key in parts[0]:
        values = [part[key] for part in parts]
        if isinstance(values[0], list):
            batch[key] = [item for value in values for item in value]
            continue
        width = max(value.size(1) for value in values) if values[0].ndim == 2 else None
        if width is not None:
            fill = pad_id if key.endswith("_ids") else 0
            values = [torch.nn.functional.pad(value, (width - value.size(1), 0) if key in LEFT_PADDED
                                              else (0, width - value.size(1)), value=fill) for value in values]
        batch[key] = torch.cat(values)
    return batch


def ghost_rows(template: dict, count: int) -> dict:
    """`count` rows that weigh nothing: copies of the template's first row with no token in the loss and advantage 0.
    They keep processes stepping together and TRL's chunks whole; their gradient is exactly zero."""
    ghosts = {}
    for key, value in template.items():
        if isinstance(value, list):
            ghosts[key] = value[:1] * count
            continue
        ghosts[key] = value[:1].repeat(count, *[1] * (value.ndim - 1))
        if key in (*LOSS_MASKS, "advantages"):
            ghosts[key] = torch.zeros_like(ghosts[key])
    return ghosts


class SignalGroupsOnly(trl.GRPOTrainer):
    """zero_variance_groups (drop, resample) and the curriculum, applied to TRL's generation batch: see
    grpo_tool/group_choice.py for what is decided, and why every process decides the same."""

    groups: GroupPolicy | None = None  # set by grpo_trainer.py; None: every group trains as in TRL
    round_rewards = None
    prompt_keys: dict | None = None

    def _calculate_rewards(self, *args, **kwargs):
        rewards = super()._calculate_rewards(*args, **kwargs)
        self.round_rewards = rewards  # gathered: every completion of the batch, from every process
        return rewards

    def scored_round(self, inputs) -> tuple[dict, list[float]]:
        """TRL's batch for `inputs`, and the total reward of each completion of the whole batch (NaN: unscored)."""
        self.round_rewards = None
        batch = super()._generate_and_score_completions(inputs)
        per_function = self.round_rewards
        if per_function is None:
            raise UserError("zero_variance_groups needs TRL's reward step, which this backend's training loop "
                            "replaces: set zero_variance_groups to keep and the curriculum rests to 0")
        totals = (per_function * self.reward_weights.to(per_function.device).unsqueeze(0)).nansum(dim=1)
        totals[torch.isnan(per_function).all(dim=1)] = float("nan")
        return batch, totals.tolist()

    def key_of(self, index: int) -> str:
        self.prompt_keys = self.prompt_keys if self.prompt_keys is not None else {}
        if index not in self.prompt_keys:
            self.prompt_keys[index] = prompt_key(self.train_dataset[index]["prompt"])
        return self.prompt_keys[index]

    def fresh_index(self, taken: set, step: int) -> int:
        """A prompt from the reserve that is not resting and not in this step yet."""
        index = self.groups.reserve.draw(lambda i: self.key_of(i) not in taken and not self.groups.rests(
            self.key_of(i), step))
        if self.groups.rests(self.key_of(index), step) and (said := self.groups.all_resting(step)):
            logger.warning(said)
        taken.add(self.key_of(index))
        return index

    def rest_prompts(self, inputs: list, keys: list[str], step: int, taken: set) -> tuple[list, int]:
        """The step's prompts with each resting one swapped for a fresh prompt (the same swap in every process)."""
        size, count = self.num_generations, len(inputs)
        start, inputs, swapped = self.accelerator.process_index * count, list(inputs), 0
        for group in range(len(keys) // size):
            if not self.groups.rests(keys[group * size], step):
                continue
            index, swapped = self.fresh_index(taken, step), swapped + 1
            for row in range(group * size, (group + 1) * size):
                keys[row] = self.key_of(index)
                if start <= row < start + count:
                    inputs[row - start] = self.train_dataset[index]
        return inputs, swapped

    def fresh_rows(self, count: int, groups: int, taken: set, step: int) -> tuple[list[str], list]:
        """`groups` fresh prompts (one key each) and this process's `count` rows of their completions."""
        indices = [self.fresh_index(taken, step) for _ in range(groups)]
        rows = [index for index in indices for _ in range(self.num_generations)]
        start = self.accelerator.process_index * count
        return [self.key_of(index) for index in indices], [self.train_dataset[i] for i in rows[start:start + count]]

    def _generate_and_score_completions(self, inputs):
        policy = self.groups
        if policy is None or not self.model.training:
            return super()._generate_and_score_completions(inputs)
        from accelerate.utils import gather_object

        step, size, count = self.state.global_step, self.num_generations, len(inputs)
        # Every row's prompt, in order, for what draws fresh prompts (resample, the curriculum); drop needs none.
        keys = gather_object([prompt_key(row["prompt"]) for row in inputs]) if policy.draws_prompts else []
        taken, swapped = set(keys), 0
        if policy.curriculum:
            inputs, swapped = self.rest_prompts(inputs, keys, step, taken)
        batch, rewards = self.scored_round(inputs)
        choice = policy.first_round(rewards, size)
        choice.swapped, rounds = swapped, [batch]
        policy.observe(keys[::size], rewards, size, step)
        while policy.wants_more(choice):
            fresh_keys, fresh = self.fresh_rows(count, choice.groups, taken, step)
            batch, rewards = self.scored_round(fresh)
            policy.next_round(choice, rewards, size)
            policy.observe(fresh_keys, rewards, size, step)
            rounds.append(batch)
        self.check_agreement(choice, step)
        placed = rows_per_process(choice.kept, size, count, self.accelerator.num_processes)
        mine = placed[self.accelerator.process_index]
        parts = [rows_of(rounds[index], [row for r, row in mine if r == index]) for index in range(len(rounds))]
        parts = [part for part in parts if len(part["advantages"])]
        ghosts = padded_size([len(rows) for rows in placed], self.args.steps_per_generation) - len(mine)
        if ghosts:
            parts.append(ghost_rows(parts[0] if parts else rows_of(rounds[0], [0]), ghosts))
        batch = joined(parts, self.processing_class.pad_token_id)
        batch["num_items_in_batch"] = self.accelerator.gather(loss_mask(batch).sum()).sum()
        self.log_choice(choice, step)
        return batch

    def check_agreement(self, choice, step: int) -> None:
        """Several processes: each must have chosen the same groups, or their batches no longer fit together."""
        if self.accelerator.num_processes == 1:
            return
        mine = torch.tensor([choice.fingerprint()], dtype=torch.long, device=self.accelerator.device)
        if (self.accelerator.gather(mine) != mine).any():
            raise RuntimeError(f"the processes chose different groups at step {step + 1}; every process must see "
                               "the same rewards, seed and data")

    def log_choice(self, choice, step: int) -> None:
        logged = self._metrics["train"]
        logged[metrics.GROUPS_FLAT].append(choice.flat / choice.groups)
        if self.groups.mode != "keep":
            logged[metrics.GROUPS_DROPPED].append(choice.dropped)
        if self.groups.mode == "resample":
            logged[metrics.GROUPS_RESAMPLED].append(choice.resampled)
            logged[metrics.EXTRA_COMPLETIONS].append((choice.rounds - 1) * choice.groups * self.num_generations)
        if self.groups.curriculum:
            logged[metrics.GROUPS_SWAPPED].append(choice.swapped)
            for kind, resting in self.groups.counts(step + 1).items():
                logged[metrics.resting(kind)].append(resting)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)  # into the staging folder (StagedCheckpoints renames it after)
        if self.groups is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial), f"{CHECKPOINT_PREFIX}{self.state.global_step}")
            write_json_atomic(os.path.join(folder, GROUPS_STATE_FILE), self.groups.state())

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.groups is not None:
            state = read_json(Path(checkpoint) / GROUPS_STATE_FILE)
            if isinstance(state, dict):
                self.groups.load(state)


# TRL's means over the tokens in the loss: with none (every group of a step dropped), TRL divides 0 by 1 and logs 0.
TOKEN_MEANS = (metrics.ENTROPY, metrics.KL, "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
               "clip_ratio/low_min", "clip_ratio/high_max", "cispo_clip_ratio", "vespo/phi_seq_mean")


class StepRecords(trl.GRPOTrainer):
    """Each optimizer step's figures in one record for the alarms (grpo_tool/alarms.py), whatever logging_steps
    says: what TRL appended to its metrics during the step (it averages them only at a log), the step's loss and its
    gradient norm, and how alike the completions were. The records go to `alarm_watch` (callbacks.AlarmCallback),
    which judges them after the step's log, evaluation and checkpoint; each checkpoint keeps them, so a resumed run
    judges the whole run."""

    alarm_watch = None  # set by grpo_trainer.py
    step_losses: list | None = None
    step_marks: dict | None = None  # how many values of each TRL metric earlier steps took

    def _generate_and_score_completions(self, inputs):
        """TRL's batch, and at training how alike its completions are: groups of one completion repeated, and
        completions that loop. Each process hashes its own; the pairs are gathered, so groups are whole."""
        batch = super()._generate_and_score_completions(inputs)
        if not self.model.training or "completion_mask" not in batch:
            return batch
        ids, keep = batch["completion_ids"].cpu(), batch["completion_mask"].bool().cpu()
        rows = [row[mask].tolist() for row, mask in zip(ids, keep)]
        pairs = [(hash(tuple(row)), looping(row)) for row in rows]
        if self.accelerator.num_processes > 1:
            pairs = gather_object(pairs)
        for key, value in completion_shapes(pairs, self.num_generations).items():
            self._metrics["train"][key].append(value)
        return batch

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        counts = {key: len(self._metrics[mode][key]) for key in TOKEN_MEANS if key in self._metrics[mode]}
        loss = super()._compute_loss(model, inputs)
        if "completion_mask" not in inputs:  # a backend's own batch layout: TRL's means are not ours to mend
            return loss
        tokens = loss_mask(inputs).sum()
        if self.accelerator.num_processes > 1:
            tokens = self.accelerator.reduce(tokens, reduction="sum")
        if tokens.item() == 0:  # nothing was measured: NaN, which TRL's log leaves out of its mean (None when alone)
            for key in TOKEN_MEANS:
                values = self._metrics[mode].get(key)
                if values and len(values) > counts.get(key, 0):
                    values[-1] = math.nan
        return loss

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        self.step_losses = (self.step_losses or []) + [loss.detach()]
        return loss

    def _maybe_log_save_evaluate(self, tr_loss, grad_norm, *args, **kwargs):
        watch, step = self.alarm_watch, self.state.global_step
        fresh = watch is not None and step > watch.last_step
        if fresh:
            marks = self.step_marks or {}
            new = {key: values[marks.get(key, 0):] for key, values in self._metrics["train"].items()
                   if isinstance(values, list)}
            losses = [float(loss) for loss in self.step_losses or []]
            watch.add(step_record(step, new, losses, None if grad_norm is None else float(grad_norm)))
        self.step_losses = []
        super()._maybe_log_save_evaluate(tr_loss, grad_norm, *args, **kwargs)
        self.step_marks = {key: len(values) for key, values in self._metrics["train"].items()}  # a log empties them
        if fresh:
            watch.judge(self.args, self.state)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)  # into the staging folder (StagedCheckpoints renames it after)
        if self.alarm_watch is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial), f"{CHECKPOINT_PREFIX}{self.state.global_step}")
            write_json_atomic(os.path.join(folder, STEP_RECORDS_FILE), self.alarm_watch.steps)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.alarm_watch is not None:
            steps = read_json(Path(checkpoint) / STEP_RECORDS_FILE, [])
            self.alarm_watch.steps = [entry for entry in steps if isinstance(entry, dict)] \
                if isinstance(steps, list) else []


def mixins_in_order(cls):
    """Checks, when the class is made, the two orders its mixins depend on, since Python's method order would
    otherwise let a reordering pass silently:
    - StagedCheckpoints before every other mixin that writes into a checkpoint (its `_save_checkpoint` runs theirs
      while `_get_output_dir` points into .staging/, so their files are renamed into place with the rest);
    - SignalGroupsOnly before StepRecords (StepRecords then measures each generation round's whole groups, not the
      joined batch, whose ghost rows would count as identical groups)."""
    order = cls.__mro__
    writers = [mixin for mixin in order if mixin.__module__ == __name__ and "_save_checkpoint" in vars(mixin)
               and mixin is not StagedCheckpoints]
    for before, after, why in [*((StagedCheckpoints, writer, "it writes into the checkpoint being staged")
                                 for writer in writers),
                               (SignalGroupsOnly, StepRecords, "it measures each generation round's groups")]:
        if before in order and after in order and order.index(after) < order.index(before):
            raise TypeError(f"{cls.__name__}: {after.__name__} must come after {before.__name__} among the bases: "
                            f"{why}")
    return cls


@mixins_in_order
class GRPOTrainerWithHooks(StagedCheckpoints, RunIntervalsOnResume, OptimizerStateOnCpu, LoraMergedForGeneration,
                           SharedPrompts, LongestPromptsFirst, SignalGroupsOnly, StepRecords, BaseModelMeasure,
                           HeldOutScores, OwnModelCard):
    """TRL's GRPOTrainer with every job above (their order is checked by `mixins_in_order`)."""
