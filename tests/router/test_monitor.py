"""The endpoint monitor applying outlier detection: failures and successes from the data path,
health probes of ejected endpoints when their time is up (a test clock; /health from a local
aiohttp server), trials, and the metrics they leave."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from prometheus_text import metric_sum

from tandem.router.decision import Role
from tandem.router.endpoints import EndpointAddress, EndpointRegistry, EndpointState
from tandem.router.errors import BackendUnreachableError, EngineServerError, EngineTimeoutError
from tandem.router.metrics import RouterMetrics
from tandem.router.monitor import EndpointMonitor
from tandem.router.outlier import EjectionPolicy, Phase


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    monitor: EndpointMonitor
    metrics: RouterMetrics
    clock: Clock
    endpoints: list[EndpointState]
    health: dict[str, int]  # the status each endpoint's /health answers
    probes: list[str]  # the endpoints probed, in order


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    health: dict[str, int] = {}
    probes: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        probes.append(name)
        return web.Response(status=health.get(name, 200))

    app = web.Application()
    app.router.add_get("/{name}/health", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    registry = EndpointRegistry()
    names = ["a", "b", "c", "d"]
    registry.replace("pool", Role.DECODE, [EndpointAddress(f"http://127.0.0.1:{port}/{n}") for n in names])
    metrics, clock = RouterMetrics(), Clock()
    async with aiohttp.ClientSession() as session:
        monitor = EndpointMonitor(
            registry,
            session,
            metrics,
            scrape_interval_s=0,
            ejection=EjectionPolicy(consecutive_failures=2, base_s=10, max_s=100),
            timeout_s=5,
            clock=clock,
        )
        yield Rig(monitor, metrics, clock, registry.states("pool", Role.DECODE), health, probes)
    await runner.cleanup()


def exposition(rig: Rig) -> str:
    return rig.metrics.exposition().decode()


def error(state: EndpointState) -> EngineServerError:
    return EngineServerError(state.url, 500)


async def test_failures_in_a_row_eject_and_are_counted(rig: Rig) -> None:
    a = rig.endpoints[0]
    rig.monitor.failed(a, error(a))
    assert a.healthy and a.outlier.failures == 1
    rig.monitor.failed(a, EngineTimeoutError(a.url, "no answer within 1 s"))
    assert not a.healthy and a.outlier.until == rig.clock.now + 10
    text = exposition(rig)
    assert metric_sum(text, "tandem_router_endpoint_failures_total", failure="error") == 1
    assert metric_sum(text, "tandem_router_endpoint_failures_total", failure="timeout") == 1
    assert metric_sum(text, "tandem_router_endpoint_ejections_total", role="decode", failure="timeout") == 1


async def test_counted_failures_never_take_out_more_than_half_a_role(rig: Rig) -> None:
    a, b, c, d = rig.endpoints
    for state in (a, b, c):
        for _ in range(3):
            rig.monitor.failed(state, error(state))
    assert [s.healthy for s in (a, b, c, d)] == [False, False, True, True]
    rig.monitor.failed(c, BackendUnreachableError(c.url, "connection refused"))  # decisive: out anyway
    assert not c.healthy


async def test_success_resets_the_count(rig: Rig) -> None:
    a = rig.endpoints[0]
    rig.monitor.failed(a, error(a))
    rig.monitor.succeeded(a)
    rig.monitor.failed(a, error(a))
    assert a.healthy and a.outlier.failures == 1


async def test_ejected_endpoint_is_probed_when_due_and_tried_once_before_it_is_back(rig: Rig) -> None:
    a, b = rig.endpoints[:2]
    rig.monitor.failed(a, BackendUnreachableError(a.url, "connection refused"))
    rig.monitor.failed(b, BackendUnreachableError(b.url, "connection refused"))
    rig.health.update(a=200, b=503)
    rig.clock.now += 9.9
    await rig.monitor.probe_all()
    assert rig.probes == []  # not due yet
    rig.clock.now += 0.1
    await rig.monitor.probe_all()
    assert sorted(rig.probes) == ["a", "b"]
    assert a.outlier.phase is Phase.TRIAL and a.healthy
    assert b.outlier.phase is Phase.EJECTED and b.outlier.until == rig.clock.now + 20  # twice as long

    release = rig.monitor.hold_trial(a)
    assert not a.healthy  # one request at a time while on trial
    release()
    assert a.healthy  # its request left without an outcome: the next may try
    rig.monitor.hold_trial(a)
    rig.monitor.succeeded(a)
    assert a.outlier.phase is Phase.IN and a.outlier.failures == 0 and a.healthy


async def test_failed_trial_ejects_for_twice_as_long(rig: Rig) -> None:
    a = rig.endpoints[0]
    for _ in range(2):
        rig.monitor.failed(a, error(a))
    rig.clock.now += 10
    await rig.monitor.probe_all()  # /health says 200: an engine answering 500 usually says so
    rig.monitor.hold_trial(a)
    rig.monitor.failed(a, error(a))
    assert a.outlier.phase is Phase.EJECTED and a.outlier.until == rig.clock.now + 20
    assert metric_sum(exposition(rig), "tandem_router_endpoint_ejections_total") == 2
