"""Each group's prompt through the model once, its key/value cache shared by the group's completions: in generation
(the prefill) and in the log-probability passes (the training pass, the old policy, the reference). TRL runs the
prompt once per completion in each of them; with a group of 8 and prompts longer than the answers, that is most of a
step's work. Heavy: imported only after backend.prepare (see grpo_tool/__init__.py).

How it stays exact. A causal model's prompt positions do not depend on the completion, so the prompt's keys and
values are the same in every row of a group: computing them once and indexing them out to the rows gives the plain
computation's numbers, up to floating-point rounding (tests/test_shared_prompts.py compares per-token
log-probabilities on the tiny model and on SmolLM2-135M, and gradients through a LoRA adapter). Positions continue
from the cache as they would in one pass: the training passes number from 0 as TRL's do, the prefill numbers from the
attention mask as `generate` does. Gradients flow through the shared prompt: indexing the cache is differentiable.
At start-up `exactness_gap` runs both ways on a small batch of the run's own model; a model whose cache cannot be
shared this way (another architecture, a cache that drops what it holds) fails that check and runs unshared.

Where it hooks in, without a copy of TRL's code: `forward_shared` puts a forward in front of the model's own while
TRL's `_get_per_token_logps_and_entropies` runs (a distributed wrapper still sees one forward call), and
`generate_shared` a `generate` that prefills before calling the model's own. Both fall back to the model's own call
for anything they do not know (other arguments, multimodal inputs, no repeated prompt in the batch), and the training
pass runs unshared under gradient checkpointing, where transformers drops the cache inside each layer.

    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [7, 8, 9]])
    first, inverse = prompt_groups(ids, (ids > 0).long())
    assert first.tolist() == [0, 2] and inverse.tolist() == [0, 0, 1]
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from grpo_tool.base_view import token_logps
from grpo_tool.settings import PARTITION_FREE_LOSSES, SHARE_PROMPTS_MIN_PARAMETERS

# How close the shared computation must come to the plain one at the start-up check, measured against how much the
# prompt matters: the mean gap between shared and plain per-token log-probabilities must be under this share of the
# gap between the completions after their own prompt and after the other prompt of the check batch. On SmolLM2-135M
# rounding gives 1e-5 in float32, 0.012 in float16 and 0.08 in bfloat16 (the largest single token 0.29), where the
# other prompt makes 2.2 and a cache given to the wrong rows 1.7; a model whose completions ignore their prompt can
# only pass within ABSOLUTE_GAP.
RELATIVE_GAP = 0.1
ABSOLUTE_GAP = 1e-4
# What the log-probability forward may be given besides the tokens, and still be shared.
KNOWN_ARGUMENTS = {"use_cache"}


def distinct_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, inverse): the first row of each distinct prompt (ids and mask alike), and for each row its prompt's
    place in `first`."""
    rows = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((len(distinct),), len(rows), dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(rows), device=rows.device), reduce="amin")
    return first, inverse


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`distinct_prompts`, or None when no two rows share a prompt (nothing to gain)."""
    first, inverse = distinct_prompts(prompt_ids, prompt_mask)
    return None if len(first) == len(inverse) else (first, inverse)


def checkpointing(module) -> bool:
    """Whether the layers run under gradient checkpointing now: transformers then drops any cache inside them."""
    return bool(getattr(module, "is_gradient_checkpointing", False)) and module.training


def shared_forward(forward, module, input_ids=None, attention_mask=None, logits_to_keep=0, **kwargs):
    """The model's `forward` as TRL's log-probability pass calls it (the last `logits_to_keep` - 1 tokens are the
    completion), with each distinct prompt run once: the logits of the last `logits_to_keep` positions, as the plain
    call returns them."""
    completion = logits_to_keep - 1 if isinstance(logits_to_keep, int) else 0
    plain = set(kwargs) - KNOWN_ARGUMENTS or completion < 1 or input_ids is None or attention_mask is None \
        or input_ids.size(1) <= completion or checkpointing(module)
    groups = None if plain else prompt_groups(input_ids[:, :-completion], attention_mask[:, :-completion])
    if groups is None:
        return forward(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep, **kwargs)
    first, inverse = groups
    prompt = forward(input_ids=input_ids[first, :-completion], attention_mask=attention_mask[first, :-completion],
                     use_cache=True, logits_to_keep=1)
    cache = prompt.past_key_values
    cache.batch_select_indices(inverse)
    rest = forward(input_ids=input_ids[:, -completion:], attention_mask=attention_mask, past_key_values=cache,
                   use_cache=True, logits_to_keep=completion)
    return CausalLMOutputWithPast(logits=torch.cat([prompt.logits[inverse], rest.logits], dim=1))


@contextlib.contextmanager
def replaced(module, name: str, make):
    """`module.<name>` replaced by `make(the current one)` for the duration, as an instance attribute (which a
    wrapper around the module, such as DistributedDataParallel, calls through); what was there before comes back."""
    had, before = name in module.__dict__, module.__dict__.get(name)
    setattr(module, name, make(getattr(module, name)))
    try:
        yield module
    finally:
        if had:
            setattr(module, name, before)
        else:
            delattr(module, name)


def forward_shared(module):
    """Within it, `module`'s forward shares prompts (`shared_forward`)."""
    return replaced(module, "forward", lambda forward: lambda *args, **kwargs:
                    shared_forward(forward, module, *args, **kwargs))


def accepts_position_ids(module) -> bool:
    """Whether `generate` passes position ids to this model (it checks the model's own forward)."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    return "position_ids" in inspect.signature(base.forward).parameters


def prefilled_generate(generate, module, input_ids=None, attention_mask=None, **kwargs):
    """`generate` with every prompt token but the last already in the cache, computed once per distinct prompt and
    indexed out to the rows; `generate` goes on from there, as it does after its own prefill."""
    config = kwargs.get("generation_config")
    plain = input_ids is None or attention_mask is None or input_ids.size(1) < 2 or "past_key_values" in kwargs \
        or set(kwargs) - {"generation_config"} or getattr(config, "cache_implementation", None) \
        or checkpointing(module)
    groups = None if plain else prompt_groups(input_ids, attention_mask)
    if groups is None:
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    first, inverse = groups
    mask = attention_mask[first, :-1]
    extra = {"position_ids": (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)} \
        if accepts_position_ids(module) else {}
    prefill = module(input_ids=input_ids[first, :-1], attention_mask=mask, use_cache=True, logits_to_keep=1, **extra)
    cache = prefill.past_key_values
    cache.batch_select_indices(inverse)
    return generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **kwargs)


def generate_shared(module):
    """Within it, `module.generate` prefills each distinct prompt once (`prefilled_generate`)."""
    return replaced(module, "generate", lambda generate: lambda *args, **kwargs:
                    prefilled_generate(generate, module, *args, **kwargs))


def check_batch(vocab_size: int, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A small batch as TRL builds one: two prompts of different lengths, left-padded, each twice, and completions
    of which one ends early (right-padded): (ids, attention mask, completion length)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(vocab_size - 1, 10), vocab_size, (4, 12), generator=generator)
    ids[1, :8], ids[3, :8] = ids[0, :8], ids[2, :8]  # each prompt twice
    mask = torch.ones_like(ids)
    mask[2:, :3] = 0  # the second prompt is 3 tokens shorter: left padding
    mask[1, 10:] = 0  # a completion that ended early
    return ids.to(device), mask.to(device), 4


def exactness_gap(logps, module) -> tuple[float, float]:
    """(gap, scale) on a small batch, in eval mode and without gradients: the mean difference between the per-token
    log-probabilities `logps(module, ids, mask, completion)` computes with prompts shared and without, and the mean
    difference the prompt makes (the same completions after the other prompt of the batch, computed plainly)."""
    ids, mask, completion = check_batch(module.config.get_text_config().vocab_size, module.device)
    swapped_ids, swapped_mask = ids.clone(), mask.clone()
    swapped_ids[:, :-completion], swapped_mask[:, :-completion] = ids[[2, 3, 0, 1], :-completion], \
        mask[[2, 3, 0, 1], :-completion]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            plain = logps(module, ids, mask, completion).float()
            swapped = logps(module, swapped_ids, swapped_mask, completion).float()
            with forward_shared(module):
                shared = logps(module, ids, mask, completion).float()
    finally:
        module.train(was_training)
    counted = mask[:, -completion:].bool()
    return (plain - shared).abs()[counted].mean().item(), (plain - swapped).abs()[counted].mean().item()


def agrees(gap: float, scale: float) -> bool:
    return gap <= max(ABSOLUTE_GAP, RELATIVE_GAP * scale)


def regrouped(chunks: list[dict]) -> list[dict]:
    """TRL's micro-batches of one generation batch (shuffled by TRL), with the rows of each prompt brought together:
    as many micro-batches, as many rows in each, prompts in the order they first appear."""
    from trl.trainer.utils import split_tensor_dict

    rows = sum(len(chunk["prompt_ids"]) for chunk in chunks)
    merged = {}
    for key, value in chunks[0].items():
        if isinstance(value, list):
            merged[key] = [item for chunk in chunks for item in chunk[key]]
        elif isinstance(value, torch.Tensor) and value.ndim > 0 and sum(len(c[key]) for c in chunks) == rows:
            merged[key] = torch.cat([chunk[key] for chunk in chunks])
        else:
            merged[key] = value  # a scalar such as num_items_in_batch, the same in every chunk
    first, inverse = distinct_prompts(merged["prompt_ids"], merged["prompt_mask"])
    order = torch.argsort(first[inverse], stable=True)  # prompts in the order they first appear, rows in theirs

    def reorder(value):
        if isinstance(value, list):
            return [value[row] for row in order.tolist()]
        if isinstance(value, torch.Tensor) and value.ndim > 0 and len(value) == rows:
            return value[order.to(value.device)]
        return value

    return split_tensor_dict({key: reorder(value) for key, value in merged.items()}, len(chunks))


@dataclasses.dataclass
class Sharing:
    """Where a run shares prompts, and the start-up line that says so."""

    generation: bool = False
    scoring: bool = False
    regroup: bool = False  # the rows of a prompt brought into the same micro-batch (`regrouped`)
    # Gradient checkpointing off while `generate` samples, as TRL turns it off for its scoring passes: a layer that
    # checkpoints in training mode drops the cache (transformers 5.17), and each new token then sees nothing before
    # it. A guard: in the tool's runs the layers were not checkpointing while TRL sampled anyway.
    cached_sampling: bool = False
    line: str = "shared prompts: off"


def structural_reason(setting: bool | None, backend: str | None, trainer) -> str | None:
    """Why prompts cannot be shared anywhere in this run, or None."""
    if setting is False:
        return "off (share_prompts false)"
    if backend == "unsloth":
        return "off: the Unsloth backend runs its own training loop, which computes log-probabilities its own way"
    if getattr(trainer, "tools", None):
        return ("off: with tools, each turn after a tool call is generated from the conversation so far, which is "
                "not the group's shared prompt")
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    if plugin is not None and plugin.zero_stage == 3:
        # Tried on two CPU processes: the start-up check's call met the partitioned weights ("'weight' must be 2-D").
        # Under ZeRO-2 and FSDP2 the same run shares, and the check agrees.
        return ("off under DeepSpeed ZeRO-3: a call on the model outside DeepSpeed's engine meets its partitioned "
                "weights")
    parameters = sum(parameter.numel() for parameter in trainer.model.parameters())
    if setting is None and parameters < SHARE_PROMPTS_MIN_PARAMETERS:
        return (f"off: a model of {parameters:,} parameters computes so little per token that a second forward call "
                "costs more than the prompt tokens it saves (share_prompts true shares all the same)")
    return None


def check_on_model(trainer) -> str | None:
    """Why the shared computation does not hold on this run's model (`exactness_gap`, `agrees`), or None."""
    module = trainer.accelerator.unwrap_model(trainer.model)
    try:
        gap, scale = exactness_gap(lambda model, ids, mask, completion: token_logps(model, ids, mask, completion,
                                                                                   len(ids)), module)
    except (RuntimeError, AttributeError, TypeError, ValueError, IndexError) as error:  # a cache unlike transformers'
        return (f"off: on this model ({type(module).__name__}) the cached computation failed: {type(error).__name__}: "
                f"{str(error).splitlines()[0][:200] if str(error) else '(no message)'}")
    if agrees(gap, scale):
        return None
    return (f"off: on this model ({type(module).__name__}) the cached computation differed from the plain one by "
            f"{gap:.3g} in a log-probability on average, where another prompt makes a difference of {scale:.3g}")


def plan(setting: bool | None, backend: str | None, trainer) -> Sharing:
    """Where this run shares prompts: off where it cannot apply or where the start-up check on the run's own model
    finds the shared computation differs from the plain one. `setting` True asks for it and makes either case an
    error (a ValueError carrying the reason)."""
    transformers_sampling = backend != "unsloth" and not (trainer.use_vllm
                                                          or trainer.use_transformers_continuous_batching)
    reason = structural_reason(setting, backend, trainer) or check_on_model(trainer)
    notes = ["gradient checkpointing is off while completions are sampled (a checkpointing layer drops the cache)"] \
        * bool(transformers_sampling and trainer.args.gradient_checkpointing)
    if reason is not None:
        if setting:
            raise ValueError(f"share_prompts=true, but {reason.removeprefix('off: ')}; leave share_prompts unset to "
                             "share prompts only where they can be")
        return Sharing(cached_sampling=transformers_sampling, line="; ".join([f"shared prompts: {reason}", *notes]))
    sharing = Sharing(generation=transformers_sampling, scoring=not trainer.args.use_liger_kernel,
                      cached_sampling=transformers_sampling)
    sharing.regroup = sharing.scoring and trainer.loss_type in PARTITION_FREE_LOSSES \
        and trainer.top_entropy_quantile == 1.0 and trainer.args.steps_per_generation > 1
    places = ["generation (each prompt prefilled once)"] * sharing.generation + \
        ["the log-probability passes (each prompt computed once per micro-batch)"] * sharing.scoring
    notes += ["generation is vLLM's, with its own prefix cache"] * trainer.use_vllm + \
        ["TRL's Liger path reads the backbone directly, so log-probabilities are computed unshared"] \
        * (not sharing.scoring) + \
        ["the training pass runs unshared under gradient checkpointing (transformers drops the cache inside each "
         "checkpointed layer)"] * bool(sharing.scoring and trainer.args.gradient_checkpointing) + \
        [f"each micro-batch holds whole groups (the {trainer.loss_type} loss does not depend on how a step's rows "
         "are split)"] * sharing.regroup
    if not places:
        if setting:
            raise ValueError(f"share_prompts=true, but {'; '.join(notes)}; leave share_prompts unset to share prompts "
                             "only where they can be")
        return Sharing(line=f"shared prompts: off: {'; '.join(notes)}")
    sharing.line = "; ".join([f"shared prompts: on in {' and '.join(places)}", *notes])
    return sharing
