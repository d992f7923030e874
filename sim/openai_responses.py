"""OpenAI / vLLM response bodies and SSE chunks, shaped as vLLM's OpenAI server writes them.

Streams are ``data: {json}\\n\\n`` chunks ending with ``data: [DONE]\\n\\n``; with
``stream_options.include_usage`` a last chunk with empty ``choices`` carries ``usage``. Chat streams
open with a ``{"role": "assistant", "content": ""}`` delta. The text chunks of a stream are built from
precomputed bytes around the JSON-encoded text: they are the hot path of a busy simulator.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

DONE = b"data: [DONE]\n\n"
_encode = msgspec.json.Encoder().encode
Kind = Literal["completion", "chat"]


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + _encode(payload) + b"\n\n"


def json_bytes(payload: Any) -> bytes:
    return _encode(payload)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None if cached_tokens is None else {"cached_tokens": cached_tokens},
    }


def response_body(
    kind: Kind,
    *,
    response_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    stop_reason: str | int | None,
    usage_block: dict[str, Any],
    kv_transfer_params: dict[str, Any] | None,
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0}
    if kind == "completion":
        choice.update(text=text, logprobs=None, finish_reason=finish_reason, stop_reason=stop_reason)
        choice["prompt_logprobs"] = None
    else:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text,
            "reasoning_content": None,
            "tool_calls": [],
        }
        choice.update(message=message, logprobs=None, finish_reason=finish_reason, stop_reason=stop_reason)
    return {
        "id": response_id,
        "object": "text_completion" if kind == "completion" else "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage_block,
        "prompt_logprobs": None,
        "kv_transfer_params": kv_transfer_params,
    }


class ChunkWriter:
    """The SSE chunks of one streamed response."""

    def __init__(self, kind: Kind, *, response_id: str, created: int, model: str) -> None:
        self._kind = kind
        self._envelope = {
            "id": response_id,
            "object": "text_completion" if kind == "completion" else "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        head = _encode({**self._envelope, "choices": []})[: -len(b"[]}")]
        if kind == "completion":
            self._head = b"data: " + head + b'[{"index":0,"text":'
            self._tail = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
        else:
            self._head = b"data: " + head + b'[{"index":0,"delta":{"content":'
            self._tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def opening(self) -> bytes | None:
        """The chunk before any text: the assistant's role, for chat."""
        if self._kind == "completion":
            return None
        return self._chunk({"role": "assistant", "content": ""}, None, None)

    def text(self, text: str) -> bytes:
        return self._head + _encode(text) + self._tail

    def final(self, text: str, finish_reason: str, stop_reason: str | int | None) -> bytes:
        content = {"content": text} if text else {}
        return self._chunk(content if self._kind == "chat" else text, finish_reason, stop_reason)

    def usage(self, usage_block: dict[str, Any]) -> bytes:
        return sse({**self._envelope, "choices": [], "usage": usage_block})

    def _chunk(self, content: Any, finish_reason: str | None, stop_reason: str | int | None) -> bytes:
        choice: dict[str, Any] = {"index": 0}
        if self._kind == "completion":
            choice["text"] = content
        else:
            choice["delta"] = content
        choice.update(logprobs=None, finish_reason=finish_reason, stop_reason=stop_reason)
        return sse({**self._envelope, "choices": [choice]})


def models_body(names: tuple[str, ...], root: str, max_model_len: int, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": root,
                "parent": None,
                "max_model_len": max_model_len,
            }
            for name in names
        ],
    }
