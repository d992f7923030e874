"""The router's HTTP surface against one simulator: errors, ids, keys, health, retries, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_text import metric_sum
from router_support import (
    MODEL,
    Addresses,
    Engine,
    engines_running,
    free_port,
    router_client,
    router_running,
)

from tandem.api.spec import BalancePolicy
from tandem.router.app import create_app
from tandem.router.settings import RouterSettings, StaticPoolSettings

pytestmark = pytest.mark.slow

BODY = {"model": MODEL, "prompt": "Say hello.", "max_tokens": 3}


@pytest.fixture(scope="module")
def engines() -> Iterator[list[Engine]]:
    hosts = Addresses()
    with engines_running([(hosts.take(), ([], {})), (hosts.take(), ([], {}))]) as engines:
        yield engines


@pytest.fixture(scope="module")
def engine(engines: list[Engine]) -> Engine:
    return engines[0]


def settings_for(*decode: str, **overrides: object) -> RouterSettings:
    static = StaticPoolSettings(model=MODEL, decode=decode, **overrides.pop("static", {}))  # type: ignore[arg-type]
    return RouterSettings(
        host="127.0.0.1", port=free_port(), notify_port=free_port(), static=static, **overrides
    )  # type: ignore[arg-type]


@pytest.fixture
async def http(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        router_running(settings_for(engine.url)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as c,
    ):
        yield c


async def test_request_id_reaches_the_engine_and_comes_back(http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/completions", json=BODY, headers={"X-Request-Id": "trace-42"})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "trace-42"
    assert answer.json()["id"] == "cmpl-trace-42"  # the simulator names its answer after the header
    generated = await http.post("/v1/completions", json=BODY, headers={"X-Request-Id": "spaces and {braces}"})
    assert len(generated.headers["x-request-id"]) == 32  # not echoed: one of ours


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("GET", "/v2/nothing", None, 404, "not_found"),
        ("GET", "/v1/completions", None, 405, "method_not_allowed"),
        ("POST", "/v1/completions", b"{oops", 400, "invalid_json"),
        ("POST", "/v1/completions", json.dumps({**BODY, "model": "other"}).encode(), 404, "model_not_found"),
        (
            "POST",
            "/v1/chat/completions",
            json.dumps({"model": MODEL, "messages": "hi"}).encode(),
            400,
            "invalid_messages",
        ),
        ("POST", "/v1/completions", b'{"prompt": "' + b"x" * (9 * 1024**2) + b'"}', 413, "body_too_large"),
    ],
)
async def test_errors_have_openai_bodies(
    http: httpx.AsyncClient, method: str, path: str, content: bytes | None, status: int, code: str
) -> None:
    answer = await http.request(method, path, content=content)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]


async def test_models_health_ready_metrics(http: httpx.AsyncClient) -> None:
    models = (await http.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert (await http.get("/health")).status_code == 200
    assert (await http.get("/ready")).json() == {"ready": True, "reasons": []}
    await http.post("/v1/completions", json=BODY)
    metrics = (await http.get("/metrics")).text
    assert metric_sum(metrics, "tandem_router_requests_total", route="direct", outcome="ok") == 1
    assert metric_sum(metrics, "tandem_router_endpoint_healthy", role="decode") == 1


async def test_api_keys_guard_the_api_but_not_probes(engine: Engine, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotated monthly\nfirst-key\n\nsecond-key\n")
    async with router_client(settings_for(engine.url, api_keys_file=keys)) as http:
        missing = await http.post("/v1/completions", json=BODY)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["type"] == "authentication_error"
        wrong = await http.get("/v1/models", headers={"Authorization": "Bearer first-key-not"})
        assert wrong.status_code == 401
        for key in ("first-key", "second-key"):
            ok = await http.post("/v1/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200


async def test_connection_error_before_the_first_byte_retries_elsewhere(engine: Engine) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings_for(
        dead, engine.url, static={"balance": BalancePolicy.ROUND_ROBIN}, scrape_interval_s=0, debug=True
    )
    async with router_running(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        answers = [await http.post("/v1/completions", json=BODY) for _ in range(3)]
        metrics = (await http.get("/metrics")).text
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.headers["x-tandem-decode"] for a in answers} == {engine.url}
    assert metric_sum(metrics, "tandem_router_retries_total", stage="connect") == 1  # then it is out
    assert metric_sum(metrics, "tandem_router_endpoint_healthy", endpoint=dead) == 0


async def test_not_ready_without_a_reachable_decoder(engine: Engine) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with router_client(settings_for(dead, scrape_interval_s=0.1)) as http:
        for _ in range(100):
            ready = await http.get("/ready")
            if ready.status_code == 503:
                break
            await asyncio.sleep(0.05)
        assert ready.json()["reasons"] == ["pool static: no decode endpoint available"]
        answer = await http.post("/v1/completions", json=BODY)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "no_decode_endpoint"


async def test_client_leaving_aborts_the_engine_request(engine: Engine) -> None:
    aborted = engine.metric("vllm:request_success_total", finished_reason="abort")
    async with router_running(settings_for(engine.url, scrape_interval_s=0)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            body = {**BODY, "max_tokens": 20000, "stream": True}
            async with http.stream("POST", "/v1/completions", json=body) as response:
                async for _ in response.aiter_lines():
                    break
        for _ in range(100):
            if engine.metric("vllm:request_success_total", finished_reason="abort") > aborted:
                break
            await asyncio.sleep(0.05)
    assert engine.metric("vllm:request_success_total", finished_reason="abort") == aborted + 1


async def test_shutdown_drains_open_streams(engine: Engine) -> None:
    settings = settings_for(engine.url, scrape_interval_s=0)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.port,
            log_level="warning",
            timeout_graceful_shutdown=30,
        )
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
        body = {**BODY, "max_tokens": 3000, "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as response:
            lines = []
            async for line in response.aiter_lines():
                if not lines:
                    server.should_exit = True  # SIGTERM, as uvicorn handles it
                lines.append(line)
    await asyncio.wait_for(serving, 30)
    data = [line for line in lines if line.startswith("data:")]
    assert data[-1] == "data: [DONE]" and len(data) > 100


async def test_unhealthy_endpoint_is_taken_out_and_probed_back_in(engines: list[Engine]) -> None:
    sick, well = engines
    settings = settings_for(sick.url, well.url, static={"balance": BalancePolicy.ROUND_ROBIN},
                            scrape_interval_s=0, probe_interval_s=0.1, debug=True)  # fmt: skip
    sick.set_faults(unhealthy=True)
    try:
        async with router_client(settings) as http:
            answers = [await http.post("/v1/completions", json=BODY) for _ in range(4)]
            assert [a.status_code for a in answers] == [200] * 4
            assert {a.headers["x-tandem-decode"] for a in answers} == {well.url}
            metrics = (await http.get("/metrics")).text
            assert metric_sum(metrics, "tandem_router_endpoint_healthy", endpoint=sick.url) == 0
            sick.set_faults()
            for _ in range(100):
                metrics = (await http.get("/metrics")).text
                if metric_sum(metrics, "tandem_router_endpoint_healthy", endpoint=sick.url) == 1:
                    break
                await asyncio.sleep(0.05)
            answers = [await http.post("/v1/completions", json=BODY) for _ in range(4)]
            assert {a.headers["x-tandem-decode"] for a in answers} == {sick.url, well.url}
    finally:
        sick.set_faults()
