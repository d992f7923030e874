"""Compose a client's answer from a handoff's legs.

After an LMCache handoff the prefiller has produced the first token (a completions answer with
`max_tokens: 1`) and the decoder the rest (a completions answer for `prompt + [first token]`). The
client asked for chat or completions, streaming or not, and must see one answer: the first token
in front, its own request's id, usage counted against its own prompt, chat chunks for chat.
"""

from __future__ import annotations

import time
from typing import Any

from tandem.router.client_request import Kind


def _choice(response: dict[str, Any]) -> dict[str, Any]:
    choices = response.get("choices") or [{}]
    first: dict[str, Any] = choices[0]
    return first


class AnswerComposer:
    def __init__(
        self, kind: Kind, request_id: str, model: str, prompt_tokens: int, prefill: dict[str, Any]
    ) -> None:
        self.kind = kind
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.id = f"{'chatcmpl' if kind is Kind.CHAT else 'cmpl'}-{request_id}"
        self.created = int(prefill.get("created") or time.time())
        choice = _choice(prefill)
        self.first_text: str = choice.get("text") or ""
        self.first_finish: str | None = choice.get("finish_reason")
        self.prefill_usage: dict[str, Any] | None = prefill.get("usage")
        self._role_sent = False

    @property
    def ends_at_first_token(self) -> bool:
        """The prefiller's token already ended the answer (EOS or a stop string)."""
        return self.first_finish == "stop"

    def _usage(self, decoded: dict[str, Any] | None) -> dict[str, int]:
        completion = 1 + int(decoded.get("completion_tokens", 0)) if decoded else 1
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def _chunk(self, text: str, finish: str | None) -> dict[str, Any]:
        if self.kind is Kind.COMPLETION:
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            return {
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [choice],
            }
        delta: dict[str, Any] = {"content": text}
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def first_event(self) -> dict[str, Any]:
        """The chunk carrying the prefiller's token; it finishes the answer only if the token did."""
        return self._chunk(self.first_text, self.first_finish if self.ends_at_first_token else None)

    def usage_event(self, decoded_usage: dict[str, Any] | None) -> dict[str, Any]:
        kind = "text_completion" if self.kind is Kind.COMPLETION else "chat.completion.chunk"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self._usage(decoded_usage),
        }

    def stream_event(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """A decoder's completions chunk, as the client's chunk."""
        if not chunk.get("choices") and chunk.get("usage"):
            return self.usage_event(chunk["usage"])
        choice = _choice(chunk)
        return self._chunk(choice.get("text") or "", choice.get("finish_reason"))

    def whole(self, decoded: dict[str, Any] | None) -> dict[str, Any]:
        """The non-streaming answer; `decoded` is the decoder's answer, None when prefill ended it."""
        choice = _choice(decoded) if decoded else {}
        text = self.first_text + (choice.get("text") or "")
        finish = choice.get("finish_reason") if decoded else self.first_finish
        usage = self._usage(decoded.get("usage") if decoded else None)
        base = {"id": self.id, "created": self.created, "model": self.model, "usage": usage}
        if self.kind is Kind.COMPLETION:
            return {
                **base,
                "object": "text_completion",
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            }
        message = {"role": "assistant", "content": text}
        return {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        }


def answer_as_events(answer: dict[str, Any], kind: Kind, *, include_usage: bool) -> list[dict[str, Any]]:
    """A complete non-streaming answer as the chunks a stream of it would have had."""
    choice = _choice(answer)
    base = {"id": answer.get("id"), "created": answer.get("created"), "model": answer.get("model")}
    finish = choice.get("finish_reason")
    if kind is Kind.COMPLETION:
        events = [
            {
                **base,
                "object": "text_completion",
                "choices": [
                    {"index": 0, "text": choice.get("text") or "", "logprobs": None, "finish_reason": finish}
                ],
            }
        ]
    else:
        delta = {"role": "assistant", "content": (choice.get("message") or {}).get("content") or ""}
        events = [
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
        ]
    if include_usage and answer.get("usage"):
        events.append({**base, "object": events[0]["object"], "choices": [], "usage": answer["usage"]})
    return events
