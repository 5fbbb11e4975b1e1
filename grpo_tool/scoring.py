"""Reward components wired for TRL: the functions and weights its GRPOTrainer takes (`single`: one weighted total;
`multi`: one function per component), the per-completion scores the generation logs show, and a sequence
classification model as a reward function.

    from grpo_tool.components import Component
    brevity = Component("brevity", lambda completions, **kwargs: [1.0 / (1 + len(c)) for c in completions], 1.0)
    functions, weights = build_reward_functions([brevity], "multi")
    assert score_completions([brevity], ["a", "abc"])[1]["total"] == 0.25
"""

from __future__ import annotations

from grpo_tool import metrics
from grpo_tool.components import Component, RewardFunction, weighted_totals
from grpo_tool.errors import UserError
from grpo_tool.messages import message_text, messages_as_text
from grpo_tool.reward_guard import guarded


def make_reward_model_reward(model, tokenizer, batch_size: int = 16) -> RewardFunction:
    """A sequence-classification model as a reward function: the score (first logit) of prompt + completion.

    The text is built as TRL builds it for a model in `reward_funcs` (the conversation through the reward model's
    chat template; plain prompt + completion otherwise; right padding, no added special tokens), so its scores are
    the ones TRL would compute; being our own function, it can also sit inside `single`'s one integrated reward and
    serve the pre-training reward check.
    """
    import torch

    def reward_model_reward(completions, prompts=None, **kwargs) -> list[float]:
        prompts = prompts if prompts is not None else [""] * len(completions)
        texts = []
        for prompt, completion in zip(prompts, completions):
            if isinstance(prompt, list):
                conversation = prompt + (completion if isinstance(completion, list)
                                         else [{"role": "assistant", "content": completion}])
                if getattr(tokenizer, "chat_template", None):
                    texts.append(tokenizer.apply_chat_template(conversation, tokenize=False))
                else:
                    texts.append(messages_as_text(prompt) + " " + message_text(completion))
            else:
                texts.append(prompt + message_text(completion))
        scores = []
        device = next(model.parameters()).device
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                padding_side="right", add_special_tokens=False).to(device)
            with torch.inference_mode():
                scores += model(**encoded).logits[:, 0].float().tolist()
        return scores

    return reward_model_reward


def make_total_reward(components: list[Component]) -> RewardFunction:
    """The `single` mode: one function returning the weighted sum of the components (a missing score counts 0),
    logging each component's mean as rewards/<component>/mean so single runs show them too."""
    parts = [(component, guarded(component)) for component in components]

    def total_reward(completions, **kwargs) -> list[float]:
        log_metric = kwargs.get("log_metric")
        scores = {}
        for component, function in parts:
            scores[component.name] = function(completions, **kwargs)
            present = [value for value in scores[component.name] if value is not None]
            if log_metric is not None and present:
                log_metric(metrics.component_mean(component.name), sum(present) / len(present))
        return weighted_totals(components, scores, len(completions))

    return total_reward


def build_reward_functions(components: list[Component], reward_function_type: str
                           ) -> tuple[list[RewardFunction], list[float]]:
    """The reward functions and weights to hand to TRL's GRPOTrainer (`reward_funcs`, `reward_weights`).

    `single`: one integrated function with weight 1. `multi`: one function per component, weighted by TRL, so TRL
    logs `rewards/<function name>/mean` for each.
    """
    if reward_function_type == "single":
        return [make_total_reward(components)], [1.0]
    if reward_function_type == "multi":
        return [guarded(c) for c in components], [c.weight for c in components]
    raise UserError(f"reward_function_type={reward_function_type!r}: use 'single' or 'multi'")


def score_completions(components: list[Component], completions: list, **columns) -> list[dict[str, float | None]]:
    """Per-completion component scores and their weighted total, for logs and reports. Scored through the guard, as
    in training: a reward that fails here (on the evaluation prompts of the generation log) stops with the same one
    line."""
    per_component = {c.name: guarded(c)(completions, **columns) for c in components}
    totals = weighted_totals(components, per_component, len(completions))
    return [{**{name: values[index] for name, values in per_component.items()}, "total": totals[index]}
            for index in range(len(completions))]
