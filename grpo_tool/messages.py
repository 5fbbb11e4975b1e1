"""Chat messages as text: the one place that knows the shapes a message, a completion or a reference can take, and
how an assistant turn lays out its tool calls.

A completion arrives as a string (plain prompts) or as `[{"role": "assistant", "content": ...}]` (chat prompts); a
reference answer may be a string or a whole conversation whose last assistant turn is the answer; message content may
be a string or a list of typed parts (`{"type": "text", "text": ...}`).

    assert message_text([{"role": "assistant", "content": "Paris."}]) == "Paris."
"""

from __future__ import annotations

import re
from typing import Any


def message_text(value: Any) -> str:
    """The text of a string, a message, a list of messages or a list of content parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return message_text(value.get("content", value.get("text", "")))
    if isinstance(value, list):
        return "".join(message_text(item) for item in value)
    return "" if value is None else str(value)


def completion_text(value: Any) -> str:
    """What the model wrote in a completion: its text, or, for a conversation with tool calls (assistant turns, tool
    calls, tool results), its assistant turns' text, one per line; the tools' results are the environment's words."""
    if isinstance(value, list) and any(isinstance(m, dict) and m.get("role") == "tool" for m in value):
        return "\n".join(message_text(m) for m in value if isinstance(m, dict) and m.get("role") == "assistant")
    return message_text(value)


def call_text(call: dict) -> str:
    """A tool call as a person reads it: calculator(expression='12*34')."""
    function = call.get("function", call)
    arguments = function.get("arguments") or {}
    shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items()) if isinstance(arguments, dict) \
        else str(arguments)
    return f"{function.get('name')}({shown})"


def transcript(turns: list[dict]) -> str:
    """An episode's turns as text: what the model wrote, each call it made (-> ...) and each result (<- ...)."""
    lines = []
    for message in turns:
        if message.get("role") == "tool":
            lines.append(f"<- {message.get('name')}: {message_text(message)}")
            continue
        if text := message_text(message).strip():
            lines.append(text)
        lines += [f"-> {call_text(call)}" for call in message.get("tool_calls") or []]
    return "\n".join(lines)


def is_message_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in value)


def answer_text(value: Any) -> str | None:
    """A reference answer as text: a string as is, a conversation's last assistant turn, None when there is none."""
    if value is None:
        return None
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        replies = [m for m in value if m.get("role") == "assistant"]
        return message_text(replies[-1]) if replies else None
    return message_text(value)


def messages_as_text(messages: list[dict]) -> str:
    """A conversation as plain text for a model without a chat template, ending where the assistant speaks next."""
    turns = [f"{message['role'].capitalize()}: {message_text(message)}" for message in messages]
    return "\n\n".join(turns + ["Assistant:"])


def tool_call_response_template(start: str, end: str) -> dict:
    """transformers' response template that reads an assistant turn of the `<tool_call>{json}</tool_call>` kind
    (Qwen's and Hermes' layout, and this tool's templates): text up to the end-of-turn token `end`, and any number of
    calls, each a JSON object with name and arguments. `start` is where an assistant turn begins."""
    return {"defaults": {"role": "assistant"}, "start_anchor": start,
            "fields": {"tool_calls": {"open": "<tool_call>", "close_pattern": r"</tool_call>\s*", "repeats": True,
                                      "content": "json", "transform": {"type": "function", "function": "{content}"}},
                       "content": {"close_pattern": re.escape(end) + r"\s*", "content": "text"}}}
