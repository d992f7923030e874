"""Request tracing: one span per request, a child per step of its way, W3C ``traceparent`` to the
engines.

The app decides once, at startup, which `Tracer` serves: `NO_TRACING` (the default) hands every
request the same `NO_TRACE`, whose steps are a shared no-op context and which never reads a header,
so a router without tracing does no tracing work at all; `OtelTracing` makes OpenTelemetry spans.

A request's span (kind SERVER, named ``POST /v1/chat/completions`` and the like) has children in
the order the request takes them: ``classify`` (the prompt's token count, a ``/tokenize`` call
when the decision needs one), ``prefill`` (a handoff's prefill leg), ``kv_wait`` (LMCache: the
wait for the prefiller's KV notifications) and ``decode`` (the engine that produces the answer,
until the answer's end). A retried attempt adds its own legs. An engine call made inside a step
carries that step's ``traceparent`` (`engine_headers`), so vLLM's ``llm_request`` span joins the
trace under the leg that asked for it. A request the sampler left out makes no children: its
engine calls carry its own traceparent, flagged unsampled.

Trust: a client's ``traceparent`` is taken as the parent and nothing else (no ``tracestate``, no
baggage); no client header becomes an attribute; prompts and answers are never recorded; engine
URLs only in debug mode (``--debug``, ``spec.router.debug``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace import Tracer as OtelTracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tandem.router.asgi import Scope, header

if TYPE_CHECKING:
    from tandem.router.meter import RequestMeter
    from tandem.router.pool import PoolConfig

# Span and attribute names (docs/tracing.md). Token counts use vLLM's names (vllm/tracing/utils.py).
CLASSIFY, PREFILL, KV_WAIT, DECODE = "classify", "prefill", "kv_wait", "decode"
POOL, MODEL, ROUTE, OUTCOME = "tandem.pool", "gen_ai.request.model", "tandem.route", "tandem.outcome"
PROMPT_TOKENS, OUTPUT_TOKENS = "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"
ENDPOINT = "tandem.endpoint"
METHOD, PATH = "http.request.method", "url.path"

# The header lines an engine call adds for the step it is made in (b"" outside any traced step).
_ENGINE_HEADERS: ContextVar[bytes] = ContextVar("tandem_engine_trace_headers", default=b"")
engine_headers = _ENGINE_HEADERS.get
_NO_STEP = contextlib.nullcontext()
_PROPAGATOR = TraceContextTextMapPropagator()


class RequestTrace(Protocol):
    def step(self, name: str, endpoint: str | None = None) -> contextlib.AbstractContextManager[None]:
        """A child span over the block; a failure raised through it marks it an error."""

    def leg(self, name: str, endpoint: str | None = None) -> contextlib.AbstractContextManager[None]:
        """A child span from the block on to the request's end (the answer's leg), or to a failure
        raised through the block."""

    def end(self, outcome: str, route: str = "none", meter: RequestMeter | None = None) -> None:
        """The request is over (idempotent): ``outcome`` as tandem_router_requests_total has it."""


class Tracer(Protocol):
    def request(self, scope: Scope, pool: PoolConfig) -> RequestTrace: ...


class _NoTrace:
    __slots__ = ()

    def step(self, name: str, endpoint: str | None = None) -> contextlib.AbstractContextManager[None]:
        return _NO_STEP

    def leg(self, name: str, endpoint: str | None = None) -> contextlib.AbstractContextManager[None]:
        return _NO_STEP

    def end(self, outcome: str, route: str = "none", meter: RequestMeter | None = None) -> None:
        return None


class _NoTracing:
    __slots__ = ()

    def request(self, scope: Scope, pool: PoolConfig) -> RequestTrace:
        return NO_TRACE


NO_TRACE: RequestTrace = _NoTrace()
NO_TRACING: Tracer = _NoTracing()


def traceparent(span: Span) -> bytes:
    """The W3C header line that makes `span` an engine's parent."""
    context = span.get_span_context()
    return b"traceparent: 00-%032x-%016x-%02x\r\n" % (context.trace_id, context.span_id, context.trace_flags)


class _OtelTrace:
    __slots__ = ("_debug", "_legs", "_root", "_tracer")

    def __init__(self, tracer: OtelTracer, root: Span, debug: bool) -> None:
        self._tracer = tracer
        self._root = root
        self._debug = debug
        self._legs: list[Span] = []

    @contextlib.contextmanager
    def step(self, name: str, endpoint: str | None = None) -> Iterator[None]:
        span = self._child(name, endpoint)
        try:
            with _calling(span):
                yield
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()

    @contextlib.contextmanager
    def leg(self, name: str, endpoint: str | None = None) -> Iterator[None]:
        span = self._child(name, endpoint)
        try:
            with _calling(span):
                yield
        except BaseException as exc:
            _failed(span, exc)
            span.end()
            raise
        self._legs.append(span)

    def end(self, outcome: str, route: str = "none", meter: RequestMeter | None = None) -> None:
        root = self._root
        if not root.is_recording():
            return
        for leg in self._legs:
            leg.end()
        self._legs.clear()
        root.set_attribute(ROUTE, route)
        root.set_attribute(OUTCOME, outcome)
        if meter is not None:
            root.set_attribute(PROMPT_TOKENS, meter.prompt_tokens)
            if meter.output_tokens is not None:
                root.set_attribute(OUTPUT_TOKENS, meter.output_tokens)
        if outcome != "ok":
            root.set_status(Status(StatusCode.ERROR, outcome))
        root.end()

    def _child(self, name: str, endpoint: str | None) -> Span:
        if not self._root.is_recording():  # unsampled: engines get the request's own, unsampled
            return self._root
        attributes = {ENDPOINT: endpoint} if endpoint is not None and self._debug else None
        return self._tracer.start_span(name, context=set_span_in_context(self._root), attributes=attributes)


class OtelTracing:
    """Spans from `provider` (its owner shuts it down). ``debug``: engine URLs on the legs."""

    def __init__(self, provider: TracerProvider, *, debug: bool = False) -> None:
        self._tracer = provider.get_tracer("tandem.router")
        self._debug = debug

    def request(self, scope: Scope, pool: PoolConfig) -> RequestTrace:
        given = header(scope, b"traceparent")
        parent = _PROPAGATOR.extract({"traceparent": given.decode("latin-1")}) if given else None
        path = scope["path"]
        root = self._tracer.start_span(
            f"POST {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={METHOD: "POST", PATH: path, POOL: pool.name, MODEL: pool.model},
        )
        return _OtelTrace(self._tracer, root, self._debug)


@contextlib.contextmanager
def _calling(span: Span) -> Iterator[None]:
    token = _ENGINE_HEADERS.set(traceparent(span))
    try:
        yield
    finally:
        _ENGINE_HEADERS.reset(token)


def _failed(span: Span, exc: BaseException) -> None:
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.set_attribute("error.type", type(exc).__name__)
