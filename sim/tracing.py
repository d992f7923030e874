"""vLLM's request span, for ``tandem sim --otlp-traces-endpoint URL``.

vLLM 0.33 makes one span per finished request (``v1/engine/output_processor.py`` 941-1001,
``do_tracing``, called at 888-889 only for requests that finished, not for aborted ones): named
``llm_request``, kind SERVER, from the request's arrival to its end, its parent the request's
``traceparent``/``tracestate`` headers (``entrypoints/serve/engine/serving.py`` 42-47 keeps just
those, ``tracing/otel.py`` ``extract_trace_context`` reads them), with the ``gen_ai.*`` attributes
of ``tracing/utils.py`` 15-44. The simulator sets the same names from its own timings; the
request parameters (``max_tokens``, ``top_p``, ``temperature``, ``n``) it leaves out. Without
the flag, `NO_SPANS` does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SPAN_NAME = "llm_request"
TRACE_HEADERS = ("traceparent", "tracestate")  # vllm/tracing/utils.py 12


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """A finished request's figures; times on the engine loop's clock (seconds)."""

    request_id: str
    trace_headers: Mapping[str, str] | None
    arrival: float
    scheduled: float
    first_token: float
    finished: float
    prompt_tokens: int
    completion_tokens: int


class RequestSpans(Protocol):
    def finished(self, request: FinishedRequest, now: float) -> None:
        """`request` finished; `now` is its `finished` time, on the same clock."""


class _NoSpans:
    def finished(self, request: FinishedRequest, now: float) -> None:
        return None


NO_SPANS: RequestSpans = _NoSpans()


def trace_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The request's W3C trace headers (vLLM's ``extract_trace_headers``), None when it has none."""
    found = {name: headers[name] for name in TRACE_HEADERS if name in headers}
    return found or None


def attributes(request: FinishedRequest) -> dict[str, str | int | float]:
    """vLLM's ``SpanAttributes`` of the span, from the request's figures."""
    return {
        "gen_ai.latency.time_to_first_token": request.first_token - request.arrival,
        "gen_ai.latency.e2e": request.finished - request.arrival,
        "gen_ai.latency.time_in_queue": request.scheduled - request.arrival,
        "gen_ai.usage.prompt_tokens": request.prompt_tokens,
        "gen_ai.usage.completion_tokens": request.completion_tokens,
        "gen_ai.latency.time_in_model_prefill": request.first_token - request.scheduled,
        "gen_ai.latency.time_in_model_decode": request.finished - request.first_token,
        "gen_ai.latency.time_in_model_inference": request.finished - request.scheduled,
        "gen_ai.request.id": request.request_id,
    }


class OtelSpans:
    """`llm_request` spans from `provider` (its owner shuts it down)."""

    def __init__(self, provider: TracerProvider) -> None:
        self._tracer = provider.get_tracer("tandem.sim")
        self._propagator = TraceContextTextMapPropagator()

    def finished(self, request: FinishedRequest, now: float) -> None:
        wall = time.time_ns()
        context = self._propagator.extract(request.trace_headers) if request.trace_headers else None
        span = self._tracer.start_span(
            SPAN_NAME,
            context=context,
            kind=SpanKind.SERVER,
            attributes=attributes(request),
            start_time=wall - int((now - request.arrival) * 1e9),
        )
        span.end(end_time=wall)
