"""Chat messages as text: the one place that knows the shapes a message, a completion or a reference can take.

A completion arrives as a string (plain prompts) or as `[{"role": "assistant", "content": ...}]` (chat prompts); a
reference answer may be a string or a whole conversation whose last assistant turn is the answer; message content may
be a string or a list of typed parts (`{"type": "text", "text": ...}`).

    assert message_text([{"role": "assistant", "content": "Paris."}]) == "Paris."
"""

from __future__ import annotations

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
