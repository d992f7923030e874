"""Engine addresses reach clients only in debug mode (`--debug`, `spec.router.debug`): the
`x-tandem-decode`/`x-tandem-prefill` headers, the `endpoint` label of /metrics (which any client
may read) and the messages of engine failures. Before, every client saw them all."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_text import metric_sum
from router_support import (
    MODEL,
    Addresses,
    Engine,
    direct_router_settings,
    engines_running,
    router_client,
)

from tandem.router.errors import (
    BackendError,
    BackendUnreachableError,
    EngineTimeoutError,
    HandoffTimeoutError,
    Ineligibility,
    NoEligibleEndpointError,
)
from tandem.router.settings import RouterSettings

BODY = {"model": MODEL, "prompt": "Say hello.", "max_tokens": 3}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with engines_running([(Addresses().take(), ([], {}))]) as engines:
        yield engines[0]


def settings_for(engine: Engine, *, debug: bool) -> RouterSettings:
    return direct_router_settings(engine.url, debug=debug)


def assert_no_address(text: str, engine: Engine) -> None:
    netloc = urlsplit(engine.url).netloc
    assert engine.host not in text and netloc not in text, text


@pytest.mark.slow
async def test_by_default_no_answer_names_an_engine(engine: Engine) -> None:
    async with router_client(settings_for(engine, debug=False)) as http:
        answer = await http.post("/v1/completions", json=BODY)
        assert answer.status_code == 200 and answer.headers["x-tandem-route"] == "direct"
        assert "x-tandem-decode" not in answer.headers and "x-tandem-prefill" not in answer.headers
        assert_no_address(str(answer.headers), engine)
        metrics = (await http.get("/metrics")).text
        assert_no_address(metrics, engine)
        assert 'endpoint="' not in metrics
        # summed per pool and role instead: what the dashboard reads
        assert metric_sum(metrics, "tandem_router_endpoint_healthy", pool="static", role="decode") == 1

        try:
            engine.set_faults(fail_next=1, error_status=500)
            failed = await http.post("/v1/completions", json=BODY)
            # Retried, but there is no other engine: 503 naming the failure by its code.
            assert failed.status_code == 503 and "(engine_error, error)" in failed.json()["error"]["message"]
            assert_no_address(failed.text, engine)

            engine.set_faults(close_after_chunks=2)
            broken = await stream_text(http)
            assert '"code": "engine_broke"' in broken
            assert_no_address(broken, engine)
        finally:
            engine.set_faults()


@pytest.mark.slow
async def test_debug_mode_names_the_engines(engine: Engine) -> None:
    async with router_client(settings_for(engine, debug=True)) as http:
        answer = await http.post("/v1/completions", json=BODY)
        assert answer.headers["x-tandem-decode"] == engine.url
        metrics = (await http.get("/metrics")).text
        assert metric_sum(metrics, "tandem_router_endpoint_healthy", endpoint=engine.url) == 1


async def stream_text(http: httpx.AsyncClient) -> str:
    async with http.stream(
        "POST", "/v1/completions", json={**BODY, "max_tokens": 50, "stream": True}
    ) as answer:
        return "".join([line async for line in answer.aiter_lines()])


@pytest.mark.parametrize(
    "error",
    [
        BackendUnreachableError("http://10.1.2.3:8000", "ConnectionRefusedError('10.1.2.3:8000')"),
        HandoffTimeoutError("10.9.9.9:7500/0b5e", 1, 2, url="http://10.9.9.8:8000"),
        EngineTimeoutError("http://10.1.2.4:8000", "no answer within 300 s"),
    ],
)
def test_engine_failures_tell_the_client_what_failed_not_where(error: BackendError) -> None:
    body = error.body().decode()
    assert "10." not in body and "10." in error.message  # the log still has it
    assert error.code is not None and error.code in body


def test_nothing_left_to_try_names_the_last_failure_by_its_code_only() -> None:
    last = EngineTimeoutError("http://10.1.2.4:8000", "no answer within 300 s")
    body = NoEligibleEndpointError(Ineligibility.NO_DECODE).after(last).body().decode()
    assert "10." not in body and "engine_timeout" in body
