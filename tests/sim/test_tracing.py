"""The simulator's vLLM request span (sim/tracing.py): named ``llm_request``, kind SERVER, from
arrival to finish, under the request's traceparent, with vLLM's ``gen_ai.*`` attributes
(vllm/v1/engine/output_processor.py 941-1001, vllm/tracing/utils.py 15-44); the trace headers
kept as vLLM keeps them; ``--otlp-traces-endpoint`` as vLLM's flag, over OTLP/HTTP only."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tandem.cli import build_parser
from tandem.sim.cli import SettingsError, build_settings
from tandem.sim.tracing import FinishedRequest, OtelSpans, trace_headers

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
URL = "http://collector:4318/v1/traces"


def finished(headers: dict[str, str] | None) -> FinishedRequest:
    return FinishedRequest("cmpl-1-0", headers, 10.0, 10.5, 11.0, 12.0, 600, 8)


def test_a_finished_request_is_one_server_span_under_its_traceparent() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = OtelSpans(provider)
    spans.finished(finished({"traceparent": PARENT}), now=12.0)
    spans.finished(finished(None), now=12.0)
    traced, alone = exporter.get_finished_spans()
    provider.shutdown()
    assert traced.name == "llm_request" and traced.kind is SpanKind.SERVER
    assert traced.parent is not None and f"{traced.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert f"{traced.get_span_context().trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert alone.parent is None
    assert (traced.end_time or 0) - (traced.start_time or 0) == pytest.approx(2e9, rel=1e-3)  # arrival on
    assert dict(traced.attributes or {}) == {
        "gen_ai.latency.time_to_first_token": 1.0,
        "gen_ai.latency.e2e": 2.0,
        "gen_ai.latency.time_in_queue": 0.5,
        "gen_ai.usage.prompt_tokens": 600,
        "gen_ai.usage.completion_tokens": 8,
        "gen_ai.latency.time_in_model_prefill": 0.5,
        "gen_ai.latency.time_in_model_decode": 1.0,
        "gen_ai.latency.time_in_model_inference": 1.5,
        "gen_ai.request.id": "cmpl-1-0",
    }


def test_only_the_w3c_headers_are_kept() -> None:
    given = {"traceparent": PARENT, "tracestate": "a=1", "baggage": "x=y", "x-request-id": "r"}
    assert trace_headers(given) == {"traceparent": PARENT, "tracestate": "a=1"}
    assert trace_headers({"x-request-id": "r"}) is None


def test_the_simulator_takes_vllms_flag_and_exports_over_http_only() -> None:
    args = build_parser().parse_args(["sim", "--otlp-traces-endpoint", URL])
    assert build_settings(args, {}).otlp_traces_endpoint == URL
    assert build_settings(build_parser().parse_args(["sim"]), {}).otlp_traces_endpoint is None
    with pytest.raises(SettingsError, match="http/protobuf"):
        build_settings(args, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})
