"""The two OpenAI endpoints a run can drive: request bodies, and what a streamed chunk carries.

Bodies follow ``vllm bench serve`` (vllm/benchmarks/lib/endpoint_request_func.py,
``async_request_openai_completions`` / ``_chat_completions``): ``stream`` with
``stream_options.include_usage`` (the last chunk carries ``usage``, so the generated tokens are
counted as the server counts them), ``max_tokens`` (chat: ``max_completion_tokens``) and, unless
turned off, ``ignore_eos: true``: a vLLM extension (vllm/entrypoints/openai/completion/protocol.py,
``ignore_eos``) that generates exactly ``max_tokens``; other servers may reject or ignore it.

A chunk is a *token chunk* under vLLM's benchmark rules, so TTFT and ITL are measured alike:
for completions, any chunk with ``choices`` (its text may be empty); for chat, a ``delta`` that
carries content, reasoning or a tool call, or empty content without a ``role`` (a token that
decodes to nothing), but not the opening ``role`` chunk (``_choice_has_streamed_output``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Endpoint(StrEnum):
    COMPLETIONS = "completions"
    CHAT = "chat"

    @property
    def path(self) -> str:
        return "/v1/completions" if self is Endpoint.COMPLETIONS else "/v1/chat/completions"

    def body(
        self, model: str, prompt: str, max_tokens: int, *, ignore_eos: bool, stream: bool = True
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model}
        if self is Endpoint.COMPLETIONS:
            body.update(prompt=prompt, max_tokens=max_tokens)
        else:
            body.update(messages=[{"role": "user", "content": prompt}], max_completion_tokens=max_tokens)
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        if ignore_eos:
            body["ignore_eos"] = True
        return body

    def is_token_chunk(self, chunk: dict[str, Any]) -> bool:
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return False
        if self is Endpoint.COMPLETIONS:
            return True
        delta = choices[0].get("delta")
        if not isinstance(delta, dict):
            return False
        if any(delta.get(key) for key in ("content", "reasoning", "tool_calls", "function_call")):
            return True
        return delta.get("content") == "" and "role" not in delta


def finish_reason(chunk: dict[str, Any]) -> str | None:
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return reason if isinstance(reason, str) else None
    return None
