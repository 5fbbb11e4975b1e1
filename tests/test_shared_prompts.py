"""Shared prompts (grpo_tool/shared_prompts.py): each group's prompt runs through the model once, and every number
that comes out equals the plain computation's: per-token log-probabilities, gradients through a LoRA adapter,
sampled tokens, and a whole training run. On the tiny model and on the real SmolLM2-135M with its chat template."""

import contextlib
import types

import pytest
import torch

from grpo_tool.shared_prompts import (
    Sharing,
    agrees,
    exactness_gap,
    forward_shared,
    generate_shared,
    plan,
    prompt_groups,
    regrouped,
)


def grouped_batch(vocab: int, prompt_lengths=(12, 7, 9), group: int = 4, completion: int = 6, seed: int = 0):
    """Rows as TRL builds them: each prompt `group` times, left-padded to the longest, completions right-padded
    where they ended early; rows shuffled as TRL shuffles a generation batch. (ids, mask, completion length)."""
    generator = torch.Generator().manual_seed(seed)
    width = max(prompt_lengths)
    rows, masks = [], []
    for length in prompt_lengths:
        prompt = torch.randint(10, vocab, (length,), generator=generator)
        for _ in range(group):
            ended = int(torch.randint(2, completion + 1, (), generator=generator))
            rows.append(torch.cat([torch.zeros(width - length, dtype=torch.long), prompt,
                                   torch.randint(10, vocab, (completion,), generator=generator)]))
            masks.append(torch.cat([torch.zeros(width - length, dtype=torch.long),
                                    torch.ones(length + ended, dtype=torch.long),
                                    torch.zeros(completion - ended, dtype=torch.long)]))
    order = torch.randperm(len(rows), generator=generator)
    return torch.stack(rows)[order], torch.stack(masks)[order], completion


@contextlib.contextmanager
def tokens_seen(model):
    """Counts the token positions the model's embedding layer is given: what the model computes."""
    seen = [0]
    handle = model.get_input_embeddings().register_forward_hook(
        lambda module, inputs, output: seen.__setitem__(0, seen[0] + inputs[0].numel()))
    try:
        yield seen
    finally:
        handle.remove()


def completion_logps(model, ids, mask, completion):
    """Per-token log-probabilities of the completions, as TRL calls the model for them."""
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=completion + 1, use_cache=False).logits
    return torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, -completion:, None]).squeeze(-1)


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM

    from grpo_tool.tiny_model import ensure_tiny_model

    return AutoModelForCausalLM.from_pretrained(ensure_tiny_model()).eval()


def with_lora(model):
    """A LoRA adapter on every linear layer, its B matrices nonzero so that it changes what the model computes."""
    import copy

    from peft import LoraConfig, get_peft_model

    adapted = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    return adapted


def test_log_probabilities_equal_and_each_prompt_runs_once(tiny):
    ids, mask, completion = grouped_batch(tiny.config.vocab_size)
    with torch.no_grad(), tokens_seen(tiny) as plain_tokens:
        plain = completion_logps(tiny, ids, mask, completion)
    with torch.no_grad(), tokens_seen(tiny) as shared_tokens, forward_shared(tiny):
        shared = completion_logps(tiny, ids, mask, completion)
    counted = mask[:, -completion:].bool()
    assert torch.allclose(plain[counted], shared[counted], atol=1e-5, rtol=0)
    prompt = ids.size(1) - completion
    assert plain_tokens[0] == 12 * (prompt + completion)
    assert shared_tokens[0] == 3 * prompt + 12 * completion  # 3 distinct prompts, once each
    assert "forward" not in tiny.__dict__  # the model's own forward is back


def gradients(model, ids, mask, completion, shared: bool, detach_cache: bool = False) -> dict:
    model.zero_grad()
    with forward_shared(model) if shared else contextlib.nullcontext():
        if detach_cache:  # the shared prompt cut out of the graph: what the test must be able to tell apart
            from transformers.cache_utils import DynamicLayer

            select = DynamicLayer.batch_select_indices
            DynamicLayer.batch_select_indices = lambda layer, index: (
                select(layer, index), setattr(layer, "keys", layer.keys.detach()),
                setattr(layer, "values", layer.values.detach()))
        try:
            logps = completion_logps(model, ids, mask, completion)
        finally:
            if detach_cache:
                DynamicLayer.batch_select_indices = select
    (logps * mask[:, -completion:]).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def close(a: torch.Tensor, b: torch.Tensor, relative: float) -> bool:
    """Equal up to `relative` of the tensor's largest entry: rounding, not a different computation."""
    return bool((a - b).abs().max() <= relative * a.abs().max())


def test_gradients_flow_through_the_shared_prompt(tiny):
    model = with_lora(tiny).train()
    ids, mask, completion = grouped_batch(tiny.config.vocab_size, seed=1)
    plain = gradients(model, ids, mask, completion, shared=False)
    shared = gradients(model, ids, mask, completion, shared=True)
    cut = gradients(model, ids, mask, completion, shared=True, detach_cache=True)
    for name in plain:
        assert close(plain[name], shared[name], 1e-5), name
    keys = [name for name in plain if "k_proj.lora_A" in name]
    assert keys and all(plain[name].abs().sum() > 0 for name in keys)
    assert not any(close(plain[name], cut[name], 1e-2) for name in keys)


def test_generation_samples_the_same_tokens_with_each_prompt_prefilled_once(tiny):
    from transformers import GenerationConfig

    ids, mask, _ = grouped_batch(tiny.config.vocab_size, seed=2)
    prompt_ids, prompt_mask = ids[:, :-6], mask[:, :-6]
    prompt_mask[:, -1] = 1  # a prompt ends in a real token
    config = GenerationConfig(max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad(), tokens_seen(tiny) as plain_tokens:
        plain = tiny.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
    with torch.no_grad(), tokens_seen(tiny) as shared_tokens, generate_shared(tiny):
        shared = tiny.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
    assert torch.equal(plain, shared)
    rows, width = prompt_ids.shape
    distinct = len(prompt_groups(prompt_ids, prompt_mask)[0])
    assert plain_tokens[0] == rows * width + rows * 4
    assert shared_tokens[0] == distinct * (width - 1) + rows * 5  # the last prompt token goes with the first step
    assert "generate" not in tiny.__dict__


def test_the_training_pass_runs_unshared_under_gradient_checkpointing(tiny):
    model = with_lora(tiny)
    model.gradient_checkpointing_enable()
    model.train()
    ids, mask, completion = grouped_batch(tiny.config.vocab_size)
    with tokens_seen(model) as seen, forward_shared(model):
        logps = completion_logps(model, ids, mask, completion)
    assert seen[0] == ids.numel()  # transformers would drop the cache in each layer: so no sharing there
    with torch.no_grad():
        plain = completion_logps(model, ids, mask, completion)
    assert torch.allclose(logps.detach(), plain, atol=1e-5)


def test_the_start_up_check_finds_a_cache_that_cannot_be_shared(tiny, monkeypatch):
    from transformers.cache_utils import DynamicLayer

    def logps(model, ids, mask, completion):
        return completion_logps(model, ids, mask, completion)

    gap, scale = exactness_gap(logps, tiny)
    assert gap < 1e-6 < 0.01 < scale and agrees(gap, scale)
    select = DynamicLayer.batch_select_indices
    monkeypatch.setattr(DynamicLayer, "batch_select_indices", lambda layer, index: select(layer, index.flip(0)))
    broken, _ = exactness_gap(logps, tiny)  # each row given the other prompt's cache
    assert broken > scale / 2 and not agrees(broken, scale)
    assert agrees(0.08, 1.7) and not agrees(0.2, 1.7) and not agrees(1e-3, 0.0)  # bf16 rounding; a broken cache


def trainer_like(model, **changes):
    """What plan reads from TRL's trainer."""
    facts = dict(model=model, accelerator=types.SimpleNamespace(unwrap_model=lambda m: m), use_vllm=False,
                 use_transformers_continuous_batching=False, is_deepspeed_enabled=False, is_fsdp_enabled=False,
                 loss_type="dapo", top_entropy_quantile=1.0,
                 args=types.SimpleNamespace(use_liger_kernel=False, gradient_checkpointing=False,
                                            steps_per_generation=2))
    for key, value in changes.items():
        if key in ("use_liger_kernel", "gradient_checkpointing", "steps_per_generation"):
            setattr(facts["args"], key, value)
        else:
            facts[key] = value
    return types.SimpleNamespace(**facts)


def test_where_prompts_are_shared_and_why_not(tiny, monkeypatch):
    small = plan(None, "transformers", trainer_like(tiny))
    assert not (small.generation or small.scoring) and "a second forward call costs more" in small.line
    assert plan(True, "transformers", trainer_like(tiny)).scoring  # asked for: shared whatever the size
    from grpo_tool import shared_prompts

    monkeypatch.setattr(shared_prompts, "SHARE_PROMPTS_MIN_PARAMETERS", 0)  # the tiny model standing in for a large one
    on = plan(None, "transformers", trainer_like(tiny))
    assert (on.generation, on.scoring, on.regroup, on.cached_sampling) == (True, True, True, True)
    assert on.line.startswith("shared prompts: on in generation") and "whole groups" in on.line
    assert plan(False, "transformers", trainer_like(tiny)) == Sharing(cached_sampling=True,
                                                                      line="shared prompts: off (share_prompts false)")
    unsloth = plan(None, "unsloth", trainer_like(tiny))
    assert not (unsloth.generation or unsloth.scoring or unsloth.cached_sampling) and "Unsloth" in unsloth.line
    zero3 = types.SimpleNamespace(unwrap_model=lambda m: m, state=types.SimpleNamespace(
        deepspeed_plugin=types.SimpleNamespace(zero_stage=3)))  # ZeRO-2 and FSDP share: tests/test_engines.py
    assert "ZeRO-3" in plan(None, "transformers", trainer_like(tiny, is_deepspeed_enabled=True, accelerator=zero3)).line
    vllm = plan(None, "transformers", trainer_like(tiny, use_vllm=True))
    assert (vllm.generation, vllm.scoring) == (False, True) and "vLLM's" in vllm.line
    liger = plan(None, "transformers", trainer_like(tiny, use_liger_kernel=True))
    assert (liger.generation, liger.scoring, liger.regroup) == (True, False, False) and "Liger" in liger.line
    assert not plan(None, "transformers", trainer_like(tiny, loss_type="bnpo")).regroup  # split-dependent loss
    checkpointed = plan(None, "transformers", trainer_like(tiny, gradient_checkpointing=True))
    assert "runs unshared under gradient checkpointing" in checkpointed.line
    assert "off while completions are sampled" in checkpointed.line
    with pytest.raises(ValueError, match="Unsloth"):
        plan(True, "unsloth", trainer_like(tiny))
    from transformers.cache_utils import DynamicLayer

    select = DynamicLayer.batch_select_indices
    monkeypatch.setattr(DynamicLayer, "batch_select_indices", lambda layer, index: select(layer, index.flip(0)))
    broken = plan(None, "transformers", trainer_like(tiny))
    assert not broken.scoring and "differed from the plain one" in broken.line
    with pytest.raises(ValueError, match="differed from the plain one"):
        plan(True, "transformers", trainer_like(tiny))

    def no_cache(layer, index):
        raise AttributeError("'NoneType' object has no attribute 'batch_select_indices'")

    monkeypatch.setattr(DynamicLayer, "batch_select_indices", no_cache)
    failing = plan(None, "transformers", trainer_like(tiny))  # a model that returns no cache: the run goes on
    assert not failing.generation and "the cached computation failed: AttributeError" in failing.line


def test_regrouping_puts_each_group_in_one_micro_batch():
    ids, mask, _ = grouped_batch(50, prompt_lengths=(5, 4, 6, 3), group=2, completion=3, seed=3)
    batch = {"prompt_ids": ids[:, :-3], "prompt_mask": mask[:, :-3], "completion_ids": ids[:, -3:],
             "advantages": torch.arange(8.0), "texts": [f"row {i}" for i in range(8)],
             "num_items_in_batch": torch.tensor(17.0)}
    chunks = [{key: value[i * 2:(i + 1) * 2] if key != "num_items_in_batch" else value
               for key, value in batch.items()} for i in range(4)]
    together = regrouped(chunks)
    assert len(together) == 4 and all(len(chunk["advantages"]) == 2 for chunk in together)
    for chunk in together:
        assert prompt_groups(chunk["prompt_ids"], chunk["prompt_mask"]) is not None  # both rows: one prompt
        assert chunk["num_items_in_batch"] == 17
        for advantage, text in zip(chunk["advantages"].tolist(), chunk["texts"]):
            assert text == f"row {int(advantage)}"  # every value of a row moved with it
    assert sorted(a for chunk in together for a in chunk["advantages"].tolist()) == list(range(8))


def test_a_run_shares_prompts_and_trains_as_it_would_unshared(tmp_path):
    """Two runs from one seed, 2 steps of 2 micro-batches of groups of 4: the same rewards, losses and adapter."""
    from safetensors.torch import load_file

    from config import build_config
    from grpo_tool.tiny_model import ensure_tiny_model
    from grpo_trainer import GRPOTrainer

    runs = {}
    for share in (True, False):  # true: the tiny model is below the size at which unset shares
        config = build_config(mode="quick_test", overrides={
            "output_dir": str(tmp_path / str(share)), "max_steps": 2, "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 2, "group_size": 4, "logging_steps": 1, "share_prompts": share,
            "max_eval_samples": 4, "eval_steps": 100, "save_steps": 100, "enable_generation_logging": False,
            "trl_options": {"optim": "sgd"}})  # an update in proportion to the gradient (Adam's divides by it)
        trainer = GRPOTrainer(config)
        trainer.train()
        sharing = trainer.trainer.sharing
        runs[share] = ([entry for entry in trainer.trainer.state.log_history if "loss" in entry],
                       load_file(str(tmp_path / str(share) / "checkpoint-2" / "model.safetensors")), sharing,
                       trainer.record)
    (shared_logs, shared_weights, sharing, record), (plain_logs, plain_weights, off, _) = runs[True], runs[False]
    assert sharing.generation and sharing.scoring and sharing.regroup and not off.scoring
    assert record["shared_prompts"]["log_probabilities"] is True
    for shared_entry, plain_entry in zip(shared_logs, plain_logs, strict=True):
        assert shared_entry["reward"] == pytest.approx(plain_entry["reward"], abs=1e-6)
        assert shared_entry["loss"] == pytest.approx(plain_entry["loss"], abs=1e-7)  # a sum that cancels to ~1e-6
    start = load_file(str(ensure_tiny_model() / "model.safetensors"))
    for name, weight in plain_weights.items():
        # the same update: apart by a few units in the last place of a weight (~2e-9 at 0.02), a thousandth of it
        assert (weight - shared_weights[name]).abs().max() <= 4e-9 + 1e-3 * (weight - start[name]).abs().max(), name
    assert any(not torch.equal(weight, start[name]) for name, weight in plain_weights.items())


def test_smollm2_chat_prompts_give_the_same_numbers(smollm2_gguf):
    """The real tokenizer and chat template, prompts of different lengths: log-probabilities, LoRA gradients and
    sampled tokens as the plain computation gives them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from grpo_tool.gguf_models import converted_gguf

    path = converted_gguf(smollm2_gguf)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    questions = ["What is the capital of France? Answer in one word.",
                 "Write two sentences about the sea, and end the second one with a question about the weather."]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for q in questions]
    width = max(map(len, prompts))
    prompt_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts for _ in range(3)])
    prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts for _ in range(3)])
    config = GenerationConfig(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        plain = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
        with generate_shared(model):
            shared = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
    assert torch.equal(plain, shared)
    torch.manual_seed(0)
    completions = torch.randint(100, 10000, (6, 8))  # each row a different completion of its group's prompt
    ids = torch.cat([prompt_ids, completions], 1)
    mask = torch.cat([prompt_mask, torch.ones_like(completions)], 1)
    mask[1, -3:] = 0
    with torch.no_grad():
        plain_logps = completion_logps(model, ids, mask, 8)
        with forward_shared(model):
            shared_logps = completion_logps(model, ids, mask, 8)
    assert (plain_logps - shared_logps)[mask[:, -8:].bool()].abs().max() < 1e-3
    adapted = with_lora(model).train()
    plain_grads = gradients(adapted, ids, mask, 8, shared=False)
    shared_grads = gradients(adapted, ids, mask, 8, shared=True)
    for name in plain_grads:
        assert close(plain_grads[name], shared_grads[name], 1e-3), name


