"""A client's completion request: the body (kept as received) and the facts routing needs."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

import msgspec

from tandem.router.errors import BadRequestError

# Prefix locality hashes this many characters of the prompt's beginning (system prompt, few-shot).
PREFIX_CHARS = 512
# Objects and arrays nested deeper are refused: a 2 KB body of 1,000 `[` would otherwise exhaust the
# decoder's recursion. A tool's JSON schema nested ten deep is about 30 levels of the body.
MAX_JSON_DEPTH = 100
_ROUTER_OWNED = frozenset({"kv_transfer_params"})


class Kind(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self is Kind.CHAT else "/v1/completions"


class ClientRequest(msgspec.Struct, frozen=True):  # built per request: its __init__ in C
    kind: Kind
    raw: bytes  # the body as received: the direct route forwards it untouched
    body: dict[str, Any]
    request_id: str
    model: str | None
    stream: bool
    max_tokens: int | None
    prompt_text: str  # what the cheap token estimate counts; empty when the prompt is token ids
    prompt_ids: list[int] | None  # a completions prompt given as token ids
    splittable: bool  # a prefill/decode split reproduces the answer
    user: str | None

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    def prefix_key(self) -> str | None:
        if self.prompt_ids is not None:
            source = ",".join(map(str, self.prompt_ids[: PREFIX_CHARS // 4])).encode()
        elif self.prompt_text:
            source = self.prompt_text[:PREFIX_CHARS].encode()
        else:
            return None
        return hashlib.blake2b(source, digest_size=12).hexdigest()


def _chat_text(messages: object) -> str:
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("`messages` must be a non-empty list", code="invalid_messages")
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequestError("each message must be an object", code="invalid_messages")
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # content parts: count the text ones
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n".join(parts)


def _int_field(body: dict[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequestError(f"`{name}` must be an integer ≥ {minimum}", code="invalid_value")
    return value


def _deeper_than(limit: int, raw: bytes, body: dict[str, Any]) -> bool:
    """Whether `body` (decoded from `raw`) nests objects and arrays more than `limit` deep."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the common case, at C speed
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _too_deep() -> BadRequestError:
    return BadRequestError(f"body nests deeper than {MAX_JSON_DEPTH} levels", code="json_too_deep")


def parse_client_request(kind: Kind, raw: bytes, request_id: str) -> ClientRequest:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise _too_deep() from exc
    if not isinstance(body, dict):
        raise BadRequestError("body must be a JSON object", code="invalid_json")
    if _deeper_than(MAX_JSON_DEPTH, raw, body):
        raise _too_deep()
    if _ROUTER_OWNED & body.keys():
        # Handoff parameters name hosts an engine connects to: only the router may set them.
        body = {k: v for k, v in body.items() if k not in _ROUTER_OWNED}
        raw = msgspec.json.encode(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequestError("`model` must be a string", code="invalid_value")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequestError("`stream` must be a boolean", code="invalid_value")
    max_tokens = _int_field(body, "max_completion_tokens" if kind is Kind.CHAT else "max_tokens", 1)
    if max_tokens is None and kind is Kind.CHAT:
        max_tokens = _int_field(body, "max_tokens", 1)
    n = _int_field(body, "n", 1) or 1
    prompt_ids: list[int] | None = None
    if kind is Kind.CHAT:
        prompt_text = _chat_text(body.get("messages"))
        composable = not any(body.get(k) for k in ("tools", "response_format", "logprobs", "top_logprobs"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompt_text = prompt
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompt_text, prompt_ids = "", list(prompt)
        elif isinstance(prompt, list) and prompt:
            prompt_text = ""  # a batch of prompts: served in one piece
        else:
            raise BadRequestError("`prompt` must be a string or a list of token ids", code="invalid_prompt")
        composable = prompt_text != "" or prompt_ids is not None
        composable = composable and not body.get("echo") and body.get("logprobs") is None
        composable = composable and (_int_field(body, "best_of", 1) or 1) == 1
    user = body.get("user")
    return ClientRequest(
        kind=kind,
        raw=raw,
        body=body,
        request_id=request_id,
        model=model,
        stream=stream,
        max_tokens=max_tokens,
        prompt_text=prompt_text,
        prompt_ids=prompt_ids,
        # One generated token is the whole answer: nothing for a decoder to do.
        splittable=composable and n == 1 and max_tokens != 1,
        user=user if isinstance(user, str) else None,
    )
