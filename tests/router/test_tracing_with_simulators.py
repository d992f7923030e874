"""Traces through the router and simulator processes: a direct request is a span with `classify`
and `decode` children, a PD request one with `classify`, `prefill`, `kv_wait` and `decode` in that
order (SDK in-memory exporter); and over OTLP/HTTP, to a receiver in the test that decodes the
protobuf, the router's spans and the engines' own vLLM `llm_request` spans form one trace under a
client's traceparent, each engine span under the leg that called it."""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from router_support import (
    LONG_PROMPT,
    MODEL,
    THRESHOLD,
    Addresses,
    Engine,
    LmcachePorts,
    engines_running,
    eventually,
    lmcache_decoder,
    lmcache_prefiller,
    lmcache_router_settings,
    router_running,
)

from tandem.router.app import create_app
from tandem.router.settings import RouterSettings

pytestmark = pytest.mark.slow

SHORT = {"model": MODEL, "prompt": "Say hello.", "max_tokens": 4}
LONG = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 6}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@dataclass(frozen=True)
class Received:
    """One span as the receiver decoded it: ids in hex, the exporting service."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start: int
    attributes: dict[str, Any]


class Receiver:
    """An OTLP/HTTP traces endpoint: POST /v1/traces, ExportTraceServiceRequest in protobuf."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces"
                if ok:
                    receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource.resource.attributes if a.key == "service.name"), ""
            )
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    received = Received(
                        service,
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        span.start_time_unix_nano,
                        attributes,
                    )
                    with self._lock:
                        self.spans.append(received)

    def of_trace(self, trace_id: str) -> list[Received]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@dataclass
class Pool:
    receiver: Receiver
    decoder: Engine
    prefiller: Engine
    ports: LmcachePorts


def traced(spec: tuple[list[str], dict[str, str]], receiver: Receiver, service: str) -> Any:
    """An engine that sends its spans to the receiver within a tenth of a second."""
    args, env = spec
    batch = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": service}
    return [*args, "--otlp-traces-endpoint", receiver.url, "--max-model-len", "1024"], {**env, **batch}


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    hosts = Addresses()
    ports = LmcachePorts.free()
    with receiving() as receiver:
        specs = [
            (host := hosts.take(), traced(lmcache_decoder(host, ports), receiver, "decoder")),
            (hosts.take(), traced(lmcache_prefiller(ports), receiver, "prefiller")),
        ]
        with engines_running(specs) as (decoder, prefiller):
            yield Pool(receiver, decoder, prefiller, ports)


def settings(pool: Pool, **overrides: Any) -> RouterSettings:
    return lmcache_router_settings(
        pool.ports, [pool.decoder], [pool.prefiller], handoff_timeout_s=5.0, **overrides
    )


def tree(spans: tuple[ReadableSpan, ...]) -> dict[str, list[str]]:
    """Each request span's name -> its children's names by start time, per trace."""
    roots = [s for s in spans if s.parent is None]
    found = {}
    for root in roots:
        span_id = root.get_span_context().span_id
        children = sorted(
            (s for s in spans if s.parent is not None and s.parent.span_id == span_id),
            key=lambda s: s.start_time or 0,
        )
        found[str((root.attributes or {})["tandem.route"])] = [c.name for c in children]
    return found


async def test_direct_and_pd_requests_are_traced_step_by_step(pool: Pool) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = settings(pool)
    app = create_app(config, spans=provider)
    async with router_running(config, app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        direct = await http.post("/v1/completions", json=SHORT)
        assert direct.status_code == 200 and direct.headers["x-tandem-route"] == "direct"
        async with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as pd:
            assert pd.status_code == 200 and pd.headers["x-tandem-route"] == "pd"
            assert (await pd.aread()).endswith(b"data: [DONE]\n\n")
    spans = exporter.get_finished_spans()
    provider.shutdown()
    assert tree(spans) == {
        "direct": ["classify", "decode"],
        "pd": ["classify", "prefill", "kv_wait", "decode"],
    }
    pd_root = next(s for s in spans if (s.attributes or {}).get("tandem.route") == "pd")
    attributes = dict(pd_root.attributes or {})
    assert attributes["tandem.outcome"] == "ok" and attributes["gen_ai.request.model"] == MODEL
    assert int(attributes["gen_ai.usage.prompt_tokens"]) > THRESHOLD  # type: ignore[call-overload]
    assert attributes["gen_ai.usage.completion_tokens"] == 6
    assert not any("tandem.endpoint" in (s.attributes or {}) for s in spans)  # not in debug mode


async def test_a_clients_trace_holds_the_router_legs_and_the_engines_spans(pool: Pool) -> None:
    config = settings(pool, otlp_traces_endpoint=pool.receiver.url)
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    async with router_running(config) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        answer = await http.post("/v1/completions", json=LONG, headers={"traceparent": traceparent})
        assert answer.status_code == 200 and answer.headers["x-tandem-route"] == "pd"
    # The router flushed its spans when it stopped; the engines send theirs within 50 ms.

    async def whole() -> list[Received] | None:
        spans = pool.receiver.of_trace(CLIENT_TRACE)
        return spans if sum(s.name == "llm_request" for s in spans) == 2 else None

    spans = await eventually(whole, "the engines' spans", within_s=20)
    (root,) = (s for s in spans if s.service == "tandem-router" and s.parent_id == CLIENT_SPAN)
    legs = sorted((s for s in spans if s.parent_id == root.span_id), key=lambda s: s.start)
    assert [s.name for s in legs] == ["classify", "prefill", "kv_wait", "decode"]
    by_leg = {s.name: s.span_id for s in legs}
    engines = {s.service: s for s in spans if s.name == "llm_request"}
    assert engines["prefiller"].parent_id == by_leg["prefill"]
    assert engines["decoder"].parent_id == by_leg["decode"]
    assert engines["prefiller"].attributes["gen_ai.usage.completion_tokens"] == 1
    assert engines["decoder"].attributes["gen_ai.usage.prompt_tokens"] > THRESHOLD
    assert "gen_ai.latency.time_to_first_token" in engines["decoder"].attributes
    assert len(spans) == 1 + 4 + 2  # nothing else joined: /tokenize makes no span, as in vLLM
