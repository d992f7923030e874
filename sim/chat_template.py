"""The simulated model's chat template (Zephyr-like).

Each message renders as ``<|{role}|>\\n{content}<|end|>\\n``; with ``add_generation_prompt`` the
text ends with ``<|assistant|>\\n``. ``<|system|>``, ``<|user|>``, ``<|assistant|>`` and ``<|end|>``
are special tokens; other roles render as plain text. Content is a string or a list of text parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ChatTemplateError(ValueError):
    """A message the template cannot render (a client error)."""


def message_text(content: Any) -> str:
    """The text of one message's ``content``: a string, ``None`` or a list of ``text`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ChatTemplateError("only text content parts are supported by the simulator")
            texts.append(part["text"])
        return "".join(texts)
    raise ChatTemplateError("message content must be a string or a list of content parts")


def render_chat(messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
    if not messages:
        raise ChatTemplateError("messages must not be empty")
    rendered = []
    for message in messages:
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ChatTemplateError("every message needs a role")
        rendered.append(f"<|{role}|>\n{message_text(message.get('content'))}<|end|>\n")
    if add_generation_prompt:
        rendered.append("<|assistant|>\n")
    return "".join(rendered)
