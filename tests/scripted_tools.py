"""A scripted model for tests of tool calling: transformers' generate replaced by one that reads the conversation so
far (rendered by the tiny model's template) and writes what the script says next: a valid call, a failing one, an
unknown tool, arguments the tool does not take, no call, calls until the round limit, a tool that hangs, an
environment's tool. Both TRL's sampling and
the tool's own sampler call generate, so every path of the tool loop runs on a model too small to call tools.

Imported by tests/test_tools.py; run as a program (in place of train_grpo.py, for `accelerate launch`), it installs
the script and runs the tool unchanged."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = {"What is 12*34?": "408", "Divide 1 by 0.": "none", "Ask nope.": "none", "Say hi.": "hi",
             "Loop forever.": "2", "Wait a while.": "done", "Call it wrongly.": "none"}


def call(name: str, arguments: dict, before: str = "") -> str:
    return f'{before}<tool_call>{{"name": "{name}", "arguments": {json.dumps(arguments)}}}</tool_call><|end|>'


def scripted_reply(text: str, variant: int) -> str:
    """What the scripted model writes next, given the conversation so far; `variant` (0 or 1) alternates within a
    group, so that groups have a reward spread to learn from."""
    turn = text[text.rfind("<|user|>"):]
    results = turn.count("<|tool|>")
    careful = "Let me check." in turn
    if "What is 12*34?" in turn:
        if not results:
            return call("calculator", {"expression": "12*34"}, "Let me check." if variant else "")
        return f"The answer is {'407' if careful else '408'}.<|end|>"
    if "Divide 1 by 0." in turn:
        return call("calculator", {"expression": "1/0"}) if not results else "I cannot.<|end|>"
    if "Ask nope." in turn:
        return call("nope", {}) if not results else "Sorry.<|end|>"
    if "Loop forever." in turn:
        return call("calculator", {"expression": "1+1"})
    if "Call it wrongly." in turn:
        return call("calculator", {"expr": "2+2"}) if not results else "Oops.<|end|>"
    if "Wait a while." in turn:
        return call("slow", {"seconds": 30}) if not results else "Waited.<|end|>"
    if "count" in turn:
        return call("increment", {"by": 2 if variant else 1}) if not results else "Done.<|end|>"
    return "Hi." + ("" if variant else " Hello.") + "<|end|>"


def scripted_generate(tokenizer):
    """A stand-in for GenerationMixin.generate: the prompt ids, then each row's scripted reply, right-padded."""
    import torch

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        replies = []
        for index, row in enumerate(input_ids.tolist()):
            text = tokenizer.decode([token for token in row if token != tokenizer.pad_token_id])
            replies.append(tokenizer(scripted_reply(text, index % 2), add_special_tokens=False)["input_ids"])
        width = max(len(reply) for reply in replies)
        padded = [reply + [tokenizer.pad_token_id] * (width - len(reply)) for reply in replies]
        return torch.cat([input_ids, torch.tensor(padded, device=input_ids.device)], dim=1)

    return generate


def final_408(completions, **kwargs) -> list[float]:
    """1 for a completion whose own words (not a tool's result) say 408."""
    from grpo_tool.messages import completion_text

    return [1.0 if "408" in completion_text(completion) else 0.0 for completion in completions]


def questions_file(path: Path) -> Path:
    path.write_text("".join(json.dumps({"prompt": question, "answer": answer}) + "\n"
                            for question, answer in QUESTIONS.items()), encoding="utf-8")
    return path


if __name__ == "__main__":
    from transformers import AutoTokenizer, GenerationMixin

    import train_grpo
    from grpo_tool.tiny_model import ensure_tiny_model

    GenerationMixin.generate = scripted_generate(AutoTokenizer.from_pretrained(ensure_tiny_model()))
    sys.exit(train_grpo.main())
