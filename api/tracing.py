"""OpenTelemetry tracing facts every Tandem process shares: OpenTelemetry's standard environment
for the OTLP/HTTP exporter, the environment a pool's ``spec.router.tracing`` becomes, and the
tracer provider the router, the simulator and the operator each build when tracing is on.

Tracing is on when a traces endpoint is given: a command-line flag (``--otlp-traces-endpoint``,
vLLM's name), else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``
with ``/v1/traces`` appended (the OTLP/HTTP convention); ``OTEL_SDK_DISABLED=true`` turns it off
whatever is given. Spans go out over OTLP/HTTP (protobuf) only. The sampler is the SDK's, from
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default: parent-based, always on); the
service name ``OTEL_SERVICE_NAME`` when set.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tandem.api.spec import TracingSpec

TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
SAMPLER = "OTEL_TRACES_SAMPLER"
SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
SERVICE_NAME = "OTEL_SERVICE_NAME"
SDK_DISABLED = "OTEL_SDK_DISABLED"
HTTP_PROTOBUF = "http/protobuf"
# Head sampling by ratio for requests that come without a parent; a parent's decision stands.
RATIO_SAMPLER = "parentbased_traceidratio"
ROUTER_SERVICE, ENGINE_SERVICE, OPERATOR_SERVICE = "tandem-router", "vllm", "tandem-operator"


class TracingConfigError(ValueError):
    """The tracing environment asks for something Tandem cannot do."""


def traces_endpoint(given: str | None, environ: Mapping[str, str]) -> str | None:
    """Where spans go (an OTLP/HTTP traces URL), or None: tracing is off."""
    if environ.get(SDK_DISABLED, "").strip().lower() == "true":
        return None
    protocol = environ.get(TRACES_PROTOCOL, HTTP_PROTOBUF)
    if protocol != HTTP_PROTOBUF:
        raise TracingConfigError(
            f"{TRACES_PROTOCOL}={protocol!r}: Tandem exports traces over {HTTP_PROTOBUF}"
        )
    if given:
        return given
    if environ.get(TRACES_ENDPOINT):
        return environ[TRACES_ENDPOINT]
    base = environ.get(ENDPOINT)
    return f"{base.rstrip('/')}/v1/traces" if base else None


def tracer_provider(service: str, endpoint: str, environ: Mapping[str, str]) -> TracerProvider:
    """A provider that batches spans to `endpoint`; its owner shuts it down (which flushes)."""
    named = {} if environ.get(SERVICE_NAME) else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(named), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def router_env(tracing: TracingSpec) -> dict[str, str]:
    """The router's environment for a pool's ``spec.router.tracing``."""
    return {
        TRACES_ENDPOINT: tracing.endpoint,
        TRACES_PROTOCOL: HTTP_PROTOBUF,
        SAMPLER: RATIO_SAMPLER,
        SAMPLER_ARG: f"{tracing.sampling_ratio:g}",
        SERVICE_NAME: ROUTER_SERVICE,
    }
