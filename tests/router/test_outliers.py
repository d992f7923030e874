"""Failing and hung engines (issue #11): the router in front of simulator processes whose faults
(tandem.sim.faults) make one engine answer 500, hang with its /health at 200, hang or stay silent
as a prefiller, or close a stream. Every request the router accepts must complete, elsewhere if
need be, or end with an explicit error; the engine at fault leaves rotation, and comes back once
it recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_text import metric_sum
from router_support import (
    LONG_PROMPT,
    MODEL,
    Addresses,
    Engine,
    LmcachePorts,
    engines_running,
    free_port,
    lmcache_decoder,
    lmcache_prefiller,
    lmcache_router_settings,
    router_client,
    static_router_settings,
)

from tandem.api.spec import BalancePolicy, DisaggregationMode, RouterTimeouts
from tandem.router.settings import RouterSettings

pytestmark = pytest.mark.slow

SHORT = {"model": MODEL, "prompt": "Say hello.", "max_tokens": 4}


@dataclass
class Engines:
    decoders: list[Engine]  # two plain engines
    pd_decoder: Engine  # an LMCache receiver
    prefiller: Engine  # an LMCache sender, notifying `ports.notify`
    ports: LmcachePorts


@pytest.fixture(scope="module")
def engines() -> Iterator[Engines]:
    hosts = Addresses()
    ports = LmcachePorts.free()
    specs = [
        (hosts.take(), ([], {})),
        (hosts.take(), ([], {})),
        (host := hosts.take(), lmcache_decoder(host, ports)),
        (hosts.take(), lmcache_prefiller(ports)),
    ]
    with engines_running(specs) as (one, two, pd_decoder, prefiller):
        yield Engines([one, two], pd_decoder, prefiller, ports)


@pytest.fixture(autouse=True)
def no_faults_left(engines: Engines) -> Iterator[None]:
    yield
    for engine in [*engines.decoders, engines.pd_decoder, engines.prefiller]:
        engine.set_faults()


def direct_settings(
    engines: Engines, timeouts: dict[str, float] | None = None, **tuning: Any
) -> RouterSettings:
    pool = {
        "decode": tuple(d.url for d in engines.decoders),
        "balance": tuning.pop("balance", BalancePolicy.ROUND_ROBIN),
        "timeouts": RouterTimeouts(**(timeouts or {})),
    }
    tuning = {"probe_interval_s": 60.0, **tuning}  # nothing comes back unless asked
    return static_router_settings(free_port(), pool, debug=True, **tuning)


def pd_settings(
    engines: Engines, mode: DisaggregationMode, timeouts: dict[str, float] | None = None, **tuning: Any
) -> RouterSettings:
    static = {"mode": mode, "timeouts": RouterTimeouts(**(timeouts or {}))}
    tuning = {"probe_interval_s": 60.0, **tuning}
    return lmcache_router_settings(
        engines.ports, [engines.pd_decoder], [engines.prefiller], static, debug=True, **tuning
    )


def faults(engine: Engine, fault: str) -> float:
    """Requests the simulator's fault acted on."""
    return engine.metric("tandem_sim_faults_injected_total", fault=fault)


async def metrics(http: httpx.AsyncClient) -> str:
    return (await http.get("/metrics")).text


async def test_engine_answering_500_is_retried_elsewhere_ejected_and_not_preferred(engines: Engines) -> None:
    """Before: a 500 became a 502 that was neither retried nor taken out, and least-load preferred
    the engine that failed fastest (91 of 100 requests got 502)."""
    bad, good = engines.decoders
    bad.set_faults(error_rate=1.0)
    settings = direct_settings(engines, balance=BalancePolicy.LEAST_LOAD, consecutive_failures=3)
    async with router_client(settings) as http:
        burst = await asyncio.gather(*(http.post("/v1/completions", json=SHORT) for _ in range(20)))
        assert [a.status_code for a in burst] == [200] * 20
        assert {a.headers["x-tandem-decode"] for a in burst} == {good.url}
        text = await metrics(http)
        assert metric_sum(text, "tandem_router_endpoint_ejections_total", failure="error") == 1
        assert metric_sum(text, "tandem_router_endpoint_healthy", endpoint=bad.url) == 0
        assert metric_sum(text, "tandem_router_retries_total", stage="error") >= 3
        failed = faults(bad, "error")
        later = [await http.post("/v1/completions", json=SHORT) for _ in range(5)]
        assert [a.status_code for a in later] == [200] * 5
        assert faults(bad, "error") == failed  # ejected: not tried again


async def test_hung_decoder_times_out_before_the_first_byte_is_retried_and_ejected(engines: Engines) -> None:
    """A hung engine whose /health still answers 200: each request waited for the client to give
    up. Now the first byte's timeout moves the request to another engine, and two in a row eject."""
    hung, well = engines.decoders
    hangs = faults(hung, "hang")
    hung.set_faults(hang=True)
    async with httpx.AsyncClient(timeout=5) as probe:
        assert (await probe.get(f"{hung.url}/health")).status_code == 200
    settings = direct_settings(engines, {"first_byte_seconds": 0.5}, consecutive_failures=2)
    async with router_client(settings) as http:
        whole = [await http.post("/v1/completions", json=SHORT) for _ in range(3)]
        async with http.stream("POST", "/v1/completions", json={**SHORT, "stream": True}) as stream:
            events = [line async for line in stream.aiter_lines() if line.startswith("data:")]
        text = await metrics(http)
    assert [a.status_code for a in whole] == [200] * 3
    assert {a.headers["x-tandem-decode"] for a in whole} == {well.url}
    assert events[-1] == "data: [DONE]"
    assert faults(hung, "hang") == hangs + 2  # round robin sent it two; then it was out
    assert metric_sum(text, "tandem_router_retries_total", stage="timeout") == 2
    assert metric_sum(text, "tandem_router_endpoint_ejections_total", role="decode", failure="timeout") == 1


async def test_stream_closed_before_its_first_event_is_retried(engines: Engines) -> None:
    """Nothing had reached the client: the stream starts over on another engine."""
    closing, well = engines.decoders
    closes = faults(closing, "close")
    closing.set_faults(close_after_chunks=0)
    async with router_client(direct_settings(engines)) as http:
        for _ in range(2):  # round robin: one of them meets the closing engine first
            async with http.stream("POST", "/v1/completions", json={**SHORT, "stream": True}) as stream:
                assert stream.headers["x-tandem-decode"] == well.url
                events = [line async for line in stream.aiter_lines() if line.startswith("data:")]
            assert events[-1] == "data: [DONE]" and '"error"' not in "".join(events)
        text = await metrics(http)
    assert metric_sum(text, "tandem_router_retries_total", stage="broke") == 1
    assert faults(closing, "close") == closes + 1


async def test_stream_closed_after_its_first_event_ends_with_an_error_event_and_no_retry(
    engines: Engines,
) -> None:
    closing = engines.decoders[0]
    closing.set_faults(close_after_chunks=2)
    settings = direct_settings(engines)
    async with router_client(settings) as http:
        async with http.stream("POST", "/v1/completions", json={**SHORT, "stream": True}) as stream:
            assert stream.headers["x-tandem-decode"] == closing.url  # round robin's first
            events = [line async for line in stream.aiter_lines() if line.startswith("data:")]
        text = await metrics(http)
    assert len(events) == 3 and '"engine_broke"' in events[-1]  # two relayed, then the error
    assert metric_sum(text, "tandem_router_retries_total") == 0  # bytes were sent: not retried
    assert metric_sum(text, "tandem_router_endpoint_failures_total", failure="broke") == 1
    assert metric_sum(text, "tandem_router_requests_total", outcome="error") == 1


async def test_ejected_engine_comes_back_once_it_recovers(engines: Engines) -> None:
    sick, well = engines.decoders
    sick.set_faults(error_rate=1.0)
    settings = direct_settings(engines, consecutive_failures=1, probe_interval_s=0.1, max_ejection_s=1.0)
    async with router_client(settings) as http:
        first = [await http.post("/v1/completions", json=SHORT) for _ in range(2)]
        assert [a.status_code for a in first] == [200, 200]
        assert metric_sum(await metrics(http), "tandem_router_endpoint_healthy", endpoint=sick.url) == 0
        sick.set_faults()
        served: set[str] = set()
        deadline = time.monotonic() + 30
        while sick.url not in served and time.monotonic() < deadline:
            answer = await http.post("/v1/completions", json=SHORT)
            assert answer.status_code == 200
            served.add(answer.headers["x-tandem-decode"])
            await asyncio.sleep(0.05)
        assert served == {sick.url, well.url}
        text = await metrics(http)
    assert metric_sum(text, "tandem_router_endpoint_healthy", endpoint=sick.url) == 1


@pytest.mark.parametrize("mode", [DisaggregationMode.AUTO, DisaggregationMode.ALWAYS])
async def test_hung_prefiller_times_out_then_falls_back_or_fails_clearly(
    engines: Engines, mode: DisaggregationMode
) -> None:
    """Before: no timeout on the prefill leg, so a hung prefiller hung every handoff-sized request."""
    hangs = faults(engines.prefiller, "hang")
    engines.prefiller.set_faults(hang=True)
    settings = pd_settings(engines, mode, {"prefill_seconds": 0.5}, consecutive_failures=2)
    body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 4}
    async with router_client(settings) as http:
        answers = [await http.post("/v1/completions", json=body) for _ in range(4)]
        text = await metrics(http)
    if mode == DisaggregationMode.AUTO:
        assert [(a.status_code, a.headers["x-tandem-route"]) for a in answers] == [(200, "direct")] * 4
        # Two paid the prefill timeout, then the prefiller was out: the rest went local at once.
        assert faults(engines.prefiller, "hang") == hangs + 2
        assert metric_sum(text, "tandem_router_fallbacks_total", reason="prefill_failed") == 2
        assert metric_sum(text, "tandem_router_fallbacks_total", reason="no_prefill_endpoint") == 2
    else:
        assert [a.status_code for a in answers] == [503] * 4
        error = answers[0].json()["error"]
        assert error["code"] == "no_prefill_endpoint"
        assert "(prefill_failed, timeout)" in error["message"]  # the log has the engine and its time
        assert faults(engines.prefiller, "hang") == hangs + 2
    assert metric_sum(text, "tandem_router_endpoint_ejections_total", role="prefill", failure="timeout") == 1


async def test_prefiller_that_never_notifies_is_ejected_and_later_requests_do_not_wait(
    engines: Engines,
) -> None:
    """Before: each handoff-sized request waited the whole handoff timeout (30 s by default), forever."""
    drops = faults(engines.prefiller, "drop_notifications")
    engines.prefiller.set_faults(drop_notifications=True)
    settings = pd_settings(engines, DisaggregationMode.AUTO, handoff_timeout_s=0.5, consecutive_failures=2)
    body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 4}
    async with router_client(settings) as http:
        answers = [await http.post("/v1/completions", json=body) for _ in range(4)]
        text = await metrics(http)
    assert [(a.status_code, a.headers["x-tandem-route"]) for a in answers] == [(200, "direct")] * 4
    assert faults(engines.prefiller, "drop_notifications") == drops + 2  # the third and fourth never met it
    assert metric_sum(text, "tandem_router_retries_total", stage="handoff") == 2
    assert (
        metric_sum(text, "tandem_router_endpoint_ejections_total", role="prefill", failure="no_notification")
        == 1
    )
