"""How the answers look to the model training started from: the per-token negative log-likelihood of completions under
the base model (`base_nll`), and how far the current model has moved from it on those completions (`base_drift`, the
mean per token of log p_current - log p_base over the current model's own samples: an estimate of KL(current || base)
in nats per token). Both at temperature 1, whatever the sampling temperature.

Each measure costs two forward passes over the completions, one through the current model and one through the base.
Where the base comes from: with LoRA, the same model with its adapter switched off (no memory);
full fine-tuning with beta > 0, TRL's reference model; full fine-tuning with beta = 0, a frozen copy of the starting
weights loaded beside the model when it has at most BASE_COPY_MAX_PARAMETERS parameters (above that the copy would
double the weights' memory, and the measure is off: use LoRA or beta > 0 to have it). Heavy: imported only after
backend.prepare (see grpo_tool/__init__.py).

    import torch; from grpo_tool.tiny_model import ensure_tiny_model; from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model())
    ids = torch.tensor([[5, 6, 7, 8, 9]]); mask = torch.ones_like(ids)
    policy, base = completion_logps(model, BaseView(reference=model), ids, mask, completion_length=3)
    result = measures(policy, base, mask[:, -3:])    # the model against itself: no drift
    assert result["base_drift"] == 0.0 and abs(result["base_nll"] + base.mean().item()) < 1e-6
"""

from __future__ import annotations

import contextlib
import logging

import torch

from grpo_tool import metrics
from grpo_tool.backend import BASE_COPY_MAX_PARAMETERS
from grpo_tool.models import model_parameters

logger = logging.getLogger(__name__)


class BaseView:
    """Which model stands for the starting point: the adapter switched off (`adapter=True`), or a `reference`."""

    def __init__(self, adapter: bool = False, reference=None):
        self.adapter, self.reference = adapter, reference

    @property
    def available(self) -> bool:
        return self.adapter or self.reference is not None

    @contextlib.contextmanager
    def model(self, current):
        """The base model to score with, for the time of the block."""
        if self.reference is not None:
            yield self.reference
            return
        with current.disable_adapter():
            yield current


def completion_logps(model, view: BaseView, ids: torch.Tensor, mask: torch.Tensor, completion_length: int,
                     batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(current, base) log-probabilities of the last `completion_length` tokens of each row of `ids`, [rows, tokens],
    at temperature 1, without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            policy = token_logps(model, ids, mask, completion_length, batch_size)
            with view.model(model) as base_model:
                base = token_logps(base_model, ids.to(base_model.device), mask.to(base_model.device),
                                   completion_length, batch_size).to(policy.device)
    finally:
        if was_training:
            model.train()
    return policy, base


def token_logps(model, ids: torch.Tensor, mask: torch.Tensor, completion_length: int, batch_size: int) -> torch.Tensor:
    rows = []
    for start in range(0, len(ids), batch_size):
        logits = model(input_ids=ids[start:start + batch_size], attention_mask=mask[start:start + batch_size],
                       logits_to_keep=completion_length + 1).logits[:, :-1]
        targets = ids[start:start + batch_size, -completion_length:]
        for row_logits, row_targets in zip(logits, targets):  # one row at a time: fp32 logits of a row, not a batch
            row_logits = row_logits.float()
            rows.append(row_logits.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1) - row_logits.logsumexp(-1))
    return torch.stack(rows)


def per_completion(policy: torch.Tensor, base: torch.Tensor, completion_mask: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(base_nll, base_drift) of each completion: means per token over its real tokens."""
    mask = completion_mask.to(policy.dtype)
    tokens = mask.sum(dim=1).clamp(min=1)
    return (-base * mask).sum(dim=1) / tokens, ((policy - base) * mask).sum(dim=1) / tokens


def measures(policy: torch.Tensor, base: torch.Tensor, completion_mask: torch.Tensor) -> dict[str, float]:
    """base_nll and base_drift averaged over completions, each weighing the same however long it is (a hacked answer
    is often a short one)."""
    nll, drift = per_completion(policy, base, completion_mask)
    return {metrics.BASE_NLL: float(nll.mean()), metrics.BASE_DRIFT: float(drift.mean())}


def row_measures(policy: torch.Tensor, base: torch.Tensor, completion_mask: torch.Tensor) -> list[dict[str, float]]:
    """The same for each completion: what each generation-log answer shows."""
    nll, drift = per_completion(policy, base, completion_mask)
    return [{metrics.BASE_NLL: round(float(a), 4), metrics.BASE_DRIFT: round(float(b), 4)} for a, b in zip(nll, drift)]


def choose_base(view: BaseView, model, trl_trainer, load_copy) -> None:
    """Fill `view` with the run's base: the adapter off (LoRA), TRL's reference model (beta > 0), a frozen copy of
    the starting weights (small full fine-tuning; `load_copy()` loads it), or none, said once in the log."""
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        view.adapter = True
        return
    reference = getattr(trl_trainer, "ref_model", None)
    if reference is not None:
        view.reference = reference
        return
    parameters = model_parameters(model)
    if parameters <= BASE_COPY_MAX_PARAMETERS:
        copy = load_copy()
        plugin = getattr(getattr(trl_trainer, "accelerator", None), "state", None)
        plugin = getattr(plugin, "deepspeed_plugin", None)
        if plugin is not None and plugin.zero_stage == 3:
            # Under ZeRO-3 transformers loads the copy inside deepspeed.zero.Init: its weights are partitioned among
            # the processes, and only a DeepSpeed engine gathers them for a forward call (TRL does the same with its
            # reference model).
            from trl.models.utils import prepare_deepspeed

            copy = prepare_deepspeed(copy, trl_trainer.accelerator)
        view.reference = copy
        return
    logger.info("base-model measure off: full fine-tuning with beta 0 keeps no copy of the starting weights for a "
                "model of %.1fB parameters (it would double their memory); use LoRA or beta > 0 to have it",
                parameters / 1e9)
