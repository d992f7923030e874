"""Where tracing is on, as OpenTelemetry's environment and a flag say (tandem.api.tracing): a
flag first, then OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, then OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces;
OTEL_SDK_DISABLED turns it off; a protocol other than OTLP/HTTP is refused, not ignored."""

from __future__ import annotations

import pytest

from tandem.api.tracing import TracingConfigError, traces_endpoint

URL = "http://collector:4318/v1/traces"


@pytest.mark.parametrize(
    ("given", "environ", "expected"),
    [
        (None, {}, None),
        (URL, {}, URL),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": URL}, URL),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, URL),
        (URL, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://other/v1/traces"}, URL),
        (URL, {"OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_tracing_is_on_where_an_endpoint_is_given(
    given: str | None, environ: dict[str, str], expected: str | None
) -> None:
    assert traces_endpoint(given, environ) == expected


def test_a_protocol_other_than_http_is_refused() -> None:
    with pytest.raises(TracingConfigError, match="grpc"):
        traces_endpoint(URL, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})
