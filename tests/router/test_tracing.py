"""The router's request traces (router/tracing.py) on the SDK's in-memory exporter: the no-op
tracer does nothing and reads nothing; a traced request's steps are children of its span, an
engine call inside a step carries that step's traceparent, a client's traceparent is the parent
and nothing more, engine URLs appear in debug mode only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from tandem.router.decision import RoutingPolicy
from tandem.router.meter import RequestMeter
from tandem.router.pool import PoolConfig
from tandem.router.signals import WorkloadSignals
from tandem.router.tracing import (
    CLASSIFY,
    DECODE,
    KV_WAIT,
    NO_TRACE,
    NO_TRACING,
    PREFILL,
    OtelTracing,
    engine_headers,
)

POOL = PoolConfig(name="p", model="m", routing=RoutingPolicy())
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
URL = "http://10.0.0.7:8000"


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "path": "/v1/completions", "headers": list(headers)}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    yield spans
    spans.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    made = TracerProvider(shutdown_on_exit=False)
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def test_without_tracing_a_request_reads_no_header_and_makes_nothing() -> None:
    trace = NO_TRACING.request({}, POOL)  # a scope without headers: reading one would raise
    assert trace is NO_TRACE
    with trace.step(CLASSIFY), trace.leg(DECODE, URL):
        assert engine_headers() == b""
    trace.end("ok")


def test_a_pd_request_is_one_trace_of_four_steps_in_order(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace = OtelTracing(provider).request(scope(), POOL)
    seen: dict[str, bytes] = {}
    for name in (CLASSIFY, PREFILL, KV_WAIT):
        with trace.step(name, URL):
            seen[name] = engine_headers()
    with trace.leg(DECODE, URL):
        seen[DECODE] = engine_headers()
    assert engine_headers() == b""  # outside a step an engine call carries nothing
    assert [s.name for s in exporter.get_finished_spans()] == [CLASSIFY, PREFILL, KV_WAIT]  # decode open
    meter = RequestMeter(WorkloadSignals().route("p", "m", "pd"), POOL.slo, 0.0, prompt_tokens=700)
    meter.answered(True, b'{"usage":{"prompt_tokens":712,"completion_tokens":9}}')
    trace.end("ok", "pd", meter)

    spans = by_name(exporter.get_finished_spans())
    root = spans["POST /v1/completions"]
    assert root.kind is SpanKind.SERVER and root.parent is None
    assert dict(root.attributes or {}) == {
        "http.request.method": "POST",
        "url.path": "/v1/completions",
        "tandem.pool": "p",
        "gen_ai.request.model": "m",
        "tandem.route": "pd",
        "tandem.outcome": "ok",
        "gen_ai.usage.prompt_tokens": 712,
        "gen_ai.usage.completion_tokens": 9,
    }
    children = sorted((s for s in spans.values() if s is not root), key=lambda s: s.start_time or 0)
    assert [s.name for s in children] == [CLASSIFY, PREFILL, KV_WAIT, DECODE]
    root_context = root.get_span_context()
    for child in children:
        context = child.get_span_context()
        assert child.parent is not None and child.parent.span_id == root_context.span_id
        assert context.trace_id == root_context.trace_id
        assert "tandem.endpoint" not in (child.attributes or {})  # not in debug mode
        flags = int(context.trace_flags)
        assert flags & 1  # sampled: the engine traces it too
        header = f"traceparent: 00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}\r\n"
        assert seen[child.name] == header.encode()
    assert (spans[DECODE].end_time or 0) <= (root.end_time or 0)


def test_a_clients_traceparent_is_the_parent_and_nothing_else(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    given = (
        (b"traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01".encode()),
        (b"tracestate", b"vendor=injected"),
        (b"baggage", b"tandem.route=forged"),
    )
    OtelTracing(provider).request(scope(*given), POOL).end("ok", "direct")
    (root,) = exporter.get_finished_spans()
    assert root.parent is not None and root.parent.is_remote
    assert f"{root.parent.span_id:016x}" == CLIENT_SPAN
    assert f"{root.get_span_context().trace_id:032x}" == CLIENT_TRACE
    assert len(root.get_span_context().trace_state) == 0
    assert (root.attributes or {})["tandem.route"] == "direct"


@pytest.mark.parametrize(
    "value",
    [b"garbage", b"00-00000000000000000000000000000000-00f067aa0ba902b7-01", b"ff-" + CLIENT_TRACE.encode()],
)
def test_a_malformed_traceparent_starts_a_trace_of_our_own(
    provider: TracerProvider, exporter: InMemorySpanExporter, value: bytes
) -> None:
    OtelTracing(provider).request(scope((b"traceparent", value)), POOL).end("ok")
    (root,) = exporter.get_finished_spans()
    assert root.parent is None


def test_engine_urls_are_on_the_legs_in_debug_mode_only(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    for debug in (False, True):
        trace = OtelTracing(provider, debug=debug).request(scope(), POOL)
        with trace.leg(DECODE, URL):
            pass
        trace.end("ok", "direct")
    quiet, loud = (s for s in exporter.get_finished_spans() if s.name == DECODE)
    assert "tandem.endpoint" not in (quiet.attributes or {})
    assert (loud.attributes or {})["tandem.endpoint"] == URL


def test_a_failed_leg_ends_as_an_error_and_the_request_says_why(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace = OtelTracing(provider).request(scope(), POOL)
    with pytest.raises(TimeoutError), trace.leg(DECODE, URL):
        raise TimeoutError("engine http://10.0.0.7:8000 fell silent")
    (leg,) = exporter.get_finished_spans()  # ended at once, not with the request
    assert leg.status.status_code is StatusCode.ERROR and leg.status.description == "TimeoutError"
    assert "10.0.0.7" not in str(leg.attributes) + str(leg.status.description) + str(leg.events)
    trace.end("unavailable", "direct")
    trace.end("ok", "direct")  # a second end changes nothing
    root = by_name(exporter.get_finished_spans())["POST /v1/completions"]
    assert root.status.status_code is StatusCode.ERROR
    assert (root.attributes or {})["tandem.outcome"] == "unavailable"
    assert len(exporter.get_finished_spans()) == 2


def test_an_unsampled_request_records_nothing_and_tells_the_engines_so(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace = OtelTracing(provider).request(scope(), POOL)
    with trace.step(CLASSIFY):
        classify = engine_headers()
    with trace.leg(DECODE, URL):
        decode = engine_headers()
    trace.end("ok", "direct")
    provider.shutdown()
    assert exporter.get_finished_spans() == ()
    assert classify == decode and classify.startswith(b"traceparent: 00-")
    assert int(classify.strip()[-2:], 16) & 1 == 0  # not sampled: the engine (parent-based) skips it too
