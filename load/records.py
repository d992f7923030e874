"""What happened to each request: the record a run keeps per arrival, and the kinds of failure.

Times are seconds from the start of the run (the schedule's t = 0). ``ttft_s`` runs from sending the
request to its first token chunk; ``itl_s`` are the gaps between consecutive token chunks and
``latency_s`` runs from sending to the last token chunk, as in ``vllm bench serve``
(vllm/benchmarks/lib/endpoint_request_func.py: ``ttft``, ``itl``, ``latency``). A chunk may carry
several tokens (speculative decoding, a server that coalesces); the gaps are per chunk all the same,
and ``tpot_s`` — the decode time divided by the tokens after the first — is per token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    HTTP = "http"  # an error status before any token (``status`` says which)
    TIMEOUT = "timeout"  # the request took longer than the request timeout, or a connect/read timed out
    CONNECTION = "connection"  # no connection, or it broke before the response began
    STREAM_BROKEN = "stream_broken"  # the response began, then the stream ended before it finished
    STREAM_ERROR = "stream_error"  # the server sent an error event inside the stream
    NO_TOKENS = "no_tokens"  # the stream finished without a single token chunk
    CANCELLED = "cancelled"  # the run was interrupted before the request finished


@dataclass(frozen=True)
class RequestRecord:
    index: int
    scheduled_s: float  # when the request was due
    prompt_tokens: int  # asked for
    output_tokens: int  # asked for (max_tokens)
    held: bool = False  # it arrived while every in-flight slot was taken, and waited for one
    sent_s: float | None = None  # None: never sent (cancelled while held)
    ended_s: float | None = None  # when it completed or failed
    ttft_s: float | None = None
    itl_s: tuple[float, ...] = ()
    latency_s: float | None = None
    server_prompt_tokens: int | None = None  # usage.prompt_tokens
    server_output_tokens: int | None = None  # usage.completion_tokens
    finish_reason: str | None = None
    error: ErrorKind | None = None
    status: int | None = None  # the HTTP status of a failed response
    detail: str = field(default="", compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_label(self) -> str | None:
        """``http 503``, ``timeout``, … (None for a success)."""
        if self.error is None:
            return None
        return f"http {self.status}" if self.error is ErrorKind.HTTP else str(self.error)

    @property
    def generated_tokens(self) -> int:
        """Tokens generated, as the server's usage counts them (else one per token chunk)."""
        if self.server_output_tokens is not None:
            return self.server_output_tokens
        return len(self.itl_s) + 1 if self.ttft_s is not None else 0

    @property
    def counted_prompt_tokens(self) -> int:
        return self.server_prompt_tokens if self.server_prompt_tokens is not None else self.prompt_tokens

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (latency - TTFT) / (tokens - 1), vLLM's TPOT.

        None for a failure or a single-token answer.
        """
        if not self.ok or self.ttft_s is None or self.latency_s is None or self.generated_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.generated_tokens - 1)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["itl_s"] = list(self.itl_s)
        return data
