"""spec.router.tracing as the operator renders it: the router's OpenTelemetry environment (endpoint,
http/protobuf, parent-based ratio sampling), and on every engine vLLM's own flag
``--otlp-traces-endpoint`` (vllm/engine/arg_utils.py:1687, ObservabilityConfig.otlp_traces_endpoint
at vllm/config/observability.py:38) with ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf``:
vLLM's exporter is gRPC unless that says otherwise (vllm/tracing/otel.py:95). A pool without it
renders none of this. What is rendered parses back: the router's flags and environment give its
settings; the simulator takes the engines' flag. And the operator's own spans: one per reconcile."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from operator_cases import engine_container, example_spec, find, layout, pool, render
from operator_memory_api import MemoryApi, pool_body

from tandem.cli import build_parser
from tandem.operator.controller import Controller
from tandem.operator.kube import KubeError
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import OperatorSettings
from tandem.router.cli import settings_from_args

ENDPOINT = "http://otel-collector.monitoring:4318/v1/traces"
ROUTER_ENV = {
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT,
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.25",
    "OTEL_SERVICE_NAME": "tandem-router",
}


def rendered(**router: Any) -> list[dict[str, Any]]:
    spec = example_spec("simulator-pool.yaml", router=router)
    return render(spec, layout(spec, prefill=1, decode=1), ref=pool("traced"))


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def router_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = find(objects, "Deployment", "traced-router")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def test_a_traced_pool_tells_the_router_and_every_engine_where_spans_go() -> None:
    objects = rendered(tracing={"endpoint": ENDPOINT, "samplingRatio": 0.25})
    router = router_container(objects)
    assert {k: v for k, v in plain_env(router).items() if k.startswith("OTEL_")} == ROUTER_ENV
    parsed = build_parser("router").parse_args(["router", *router["args"]])
    assert settings_from_args(parsed, plain_env(router)).otlp_traces_endpoint == ENDPOINT
    for role in ("prefill", "decode"):
        engine = engine_container(objects, "traced", role)
        args = engine["args"]
        assert args[args.index("--otlp-traces-endpoint") + 1] == ENDPOINT
        env = plain_env(engine)
        assert env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"
        assert "OTEL_TRACES_SAMPLER" not in env  # parent-based, the SDK's default: as the router sampled
        assert build_parser("sim").parse_args(["sim", *args]).otlp_traces_endpoint == ENDPOINT


def test_an_untraced_pool_renders_no_tracing() -> None:
    objects = rendered()
    assert not any(k.startswith("OTEL_") for k in plain_env(router_container(objects)))
    for role in ("prefill", "decode"):
        engine = engine_container(objects, "traced", role)
        assert "--otlp-traces-endpoint" not in engine["args"]
        assert not any(k.startswith("OTEL_") for k in plain_env(engine))


async def test_each_reconcile_is_a_span_and_a_failed_one_an_error() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    api = MemoryApi()
    refusals = iter([KubeError(500, "etcd is away", reason="InternalError")])
    api.refuse = lambda manifest: next(refusals, None)  # the first apply fails, the rest pass
    settings = OperatorSettings(retry_base_seconds=0.001, retry_max_seconds=0.002)
    controller = Controller(settings, catalog_planner(), api, instance="test", spans=provider)
    await controller.start()
    try:
        controller.cache.observe_pool(None, api.store_pool(pool_body()))
        async with asyncio.timeout(10):
            while not any(outcome(s) == "ok" for s in exporter.get_finished_spans()):  # noqa: ASYNC110
                await asyncio.sleep(0.001)
    finally:
        await controller.stop()
        provider.shutdown()
    failed, *_, done = exporter.get_finished_spans()
    assert failed.name == done.name == "reconcile"
    assert dict(failed.attributes or {}) == {
        "k8s.namespace.name": "serving",
        "tandem.pool": "sim-llama",
        "tandem.failures": 0,
        "tandem.outcome": "error",
    }
    assert failed.status.status_code is StatusCode.ERROR and failed.events[0].name == "exception"
    assert outcome(done) == "ok" and done.status.status_code is not StatusCode.ERROR


def outcome(span: ReadableSpan) -> object:
    return (span.attributes or {}).get("tandem.outcome")
