"""The Dispatcher against a fake engine side and a fake connector: what it sends where, what it
takes next after a failure (retry elsewhere, go direct, fail), what it reports and releases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import msgspec
import pytest
from prometheus_text import metric_sum

from tandem.api.spec import BalancePolicy, DisaggregationMode, KvConnector
from tandem.router.client_request import Kind, parse_client_request
from tandem.router.connectors.base import Connector, ConnectorServices, HandoffJob
from tandem.router.decision import Role, RoutingPolicy
from tandem.router.dispatch import Dispatcher, Hints
from tandem.router.endpoints import EndpointAddress, EndpointRegistry, EndpointState
from tandem.router.errors import (
    BackendError,
    BackendUnreachableError,
    Failure,
    NoEligibleEndpointError,
    PrefillFailedError,
)
from tandem.router.metrics import RouterMetrics
from tandem.router.pool import PoolConfig
from tandem.router.reply import Reply
from tandem.router.settings import RouterSettings, StaticPoolSettings
from tandem.router.state import RouterState

D1, D2, D3 = "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"
P1, P2 = "http://10.0.1.1:8000", "http://10.0.1.2:8000"
ANSWER = b'{"choices": [{"text": "hi"}]}'
LONG = list(range(2000))  # a prompt above the threshold: a handoff


class FakeResponse:
    def __init__(self, status: int) -> None:
        self.status = status


class FakeUpstream:
    """The engines: each URL answers ANSWER, or raises what `failing` names for it."""

    def __init__(self, failing: dict[str, BackendError] | None = None) -> None:
        self.failing = failing or {}
        self.opened: list[str] = []

    async def open(self, url: str, path: str, body: bytes, request_id: str, timeouts: object) -> FakeResponse:
        self.opened.append(url)
        if url in self.failing:
            raise self.failing[url]
        return FakeResponse(200)

    async def read(self, resp: FakeResponse, url: str) -> bytes:
        return ANSWER


class FakeConnector(Connector):
    """Handoffs that fail on the prefillers `failing` names, else answer."""

    def __init__(self, failing: dict[str, BackendError] | None = None) -> None:
        self.failing = failing or {}
        self.jobs: list[HandoffJob] = []

    @classmethod
    def build(cls, services: ConnectorServices) -> Connector:
        raise NotImplementedError

    async def handoff(self, job: HandoffJob) -> Reply:
        self.jobs.append(job)
        if job.prefill.url in self.failing:
            raise self.failing[job.prefill.url]
        return Reply(200, body=b'{"handoff": true}')


class FakeMonitor:
    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []

    def failed(self, state: EndpointState, error: BackendError) -> None:
        self.failures.append((state.url, type(error).__name__))

    def succeeded(self, state: EndpointState) -> None:
        pass


class Rig:
    def __init__(
        self,
        decoders: tuple[str, ...],
        prefillers: tuple[str, ...] = (),
        *,
        mode: DisaggregationMode = DisaggregationMode.AUTO,
        retries: int = 2,
        upstream: FakeUpstream | None = None,
        connector: FakeConnector | None = None,
    ) -> None:
        self.registry = EndpointRegistry()
        self.metrics = RouterMetrics()
        self.state = RouterState(
            self.registry, self.metrics, max_inflight_per_decode=8, retry_after_s=1, handoff_timeout_s=5
        )
        routing = RoutingPolicy(mode=mode, threshold=1024, balance=BalancePolicy.ROUND_ROBIN)
        self.config = PoolConfig(
            name="p", model="m", routing=routing, connector=KvConnector.NIXL, max_model_len=8192
        )
        self.state.set_pool(self.config)
        self.state.set_endpoints("p", Role.DECODE, [EndpointAddress(u) for u in decoders])
        self.state.set_endpoints("p", Role.PREFILL, [EndpointAddress(u) for u in prefillers])
        settings = RouterSettings(static=StaticPoolSettings(model="m", decode=decoders), retries=retries)
        self.upstream = upstream or FakeUpstream()
        self.connector = connector or FakeConnector()
        self.monitor = FakeMonitor()
        self.dispatcher = Dispatcher(
            settings,
            self.state,
            self.upstream,  # type: ignore[arg-type]
            {KvConnector.NIXL: self.connector},
            self.monitor,  # type: ignore[arg-type]
        )

    async def serve(self, prompt: Any = "hello") -> Reply:
        raw = msgspec.json.encode({"model": "m", "prompt": prompt, "max_tokens": 8})
        request = parse_client_request(Kind.COMPLETION, raw, "r1")
        return await self.dispatcher.serve(self.state.pool_for(request.model), request, Hints())

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(self.metrics.exposition().decode(), name, **labels)

    def in_flight(self) -> Iterator[int]:
        for role in Role:
            for state in self.registry.states("p", role):
                yield state.in_flight


def unreachable(url: str) -> BackendUnreachableError:
    return BackendUnreachableError(url, "refused")


async def test_a_short_prompt_goes_direct_and_releases_its_lease() -> None:
    rig = Rig((D1,))
    reply = await rig.serve()
    assert (reply.status, reply.body) == (200, ANSWER)
    assert rig.upstream.opened == [D1]
    assert set(rig.in_flight()) == {0}
    assert rig.state.pools["p"].admission.active == 0


async def test_a_failed_decoder_is_reported_and_the_request_retried_on_another() -> None:
    rig = Rig((D1, D2), upstream=FakeUpstream({D1: unreachable(D1)}))
    reply = await rig.serve()
    assert reply.status == 200
    assert sorted(rig.upstream.opened) == [D1, D2]
    assert rig.monitor.failures == [(D1, "BackendUnreachableError")]
    assert rig.metric("tandem_router_retries_total", stage="connect") == 1
    assert set(rig.in_flight()) == {0}


async def test_a_failed_prefill_goes_direct_on_the_same_decoder_without_spending_a_retry() -> None:
    failing: dict[str, BackendError] = {P1: PrefillFailedError(P1, "boom", failure=Failure.ERROR)}
    rig = Rig((D1,), (P1,), retries=0, connector=FakeConnector(failing))
    reply = await rig.serve(LONG)
    assert (reply.status, reply.body) == (200, ANSWER)
    assert [job.decode.url for job in rig.connector.jobs] == [D1]
    assert rig.upstream.opened == [D1]  # the direct route, on the handoff's decoder
    assert rig.monitor.failures == [(P1, "PrefillFailedError")]
    assert rig.metric("tandem_router_fallbacks_total", reason="prefill_failed") == 1
    assert rig.metric("tandem_router_retries_total") == 0
    assert set(rig.in_flight()) == {0}


async def test_a_failed_prefill_in_mode_always_is_retried_on_another_prefiller() -> None:
    failing: dict[str, BackendError] = {P1: PrefillFailedError(P1, "boom", failure=Failure.ERROR)}
    connector = FakeConnector(failing)
    rig = Rig((D1,), (P1, P2), mode=DisaggregationMode.ALWAYS, connector=connector)
    reply = await rig.serve(LONG)
    assert reply.body == b'{"handoff": true}'
    assert sorted(job.prefill.url for job in connector.jobs) == [P1, P2]
    assert rig.upstream.opened == []  # never direct
    assert rig.metric("tandem_router_retries_total", stage="prefill") == 1


async def test_the_last_failure_goes_to_the_client_once_the_retries_are_spent() -> None:
    rig = Rig((D1, D2, D3), retries=1, upstream=FakeUpstream({u: unreachable(u) for u in (D1, D2, D3)}))
    with pytest.raises(BackendUnreachableError):
        await rig.serve()
    assert len(rig.upstream.opened) == 2  # one try and one retry
    assert set(rig.in_flight()) == {0}
    assert rig.state.pools["p"].admission.active == 0


async def test_a_failure_of_no_one_endpoint_is_not_retried() -> None:
    rig = Rig((D1, D2), upstream=FakeUpstream({D1: BackendError("bad", code="x"), D2: BackendError("bad")}))
    with pytest.raises(BackendError):
        await rig.serve()
    assert len(rig.upstream.opened) == 1
    assert rig.monitor.failures == []


async def test_nothing_left_to_try_names_the_failure_that_left_nothing() -> None:
    rig = Rig((D1,), upstream=FakeUpstream({D1: unreachable(D1)}))
    with pytest.raises(NoEligibleEndpointError) as raised:
        await rig.serve()
    assert "after The engine serving this request failed" in raised.value.message
    assert rig.metric("tandem_router_requests_total", outcome="unavailable") == 1


class ReloadingUpstream(FakeUpstream):
    """The engines, and a /tokenize during which the pool's config is reloaded (`reload`)."""

    def __init__(self, reload: Any) -> None:
        super().__init__()
        self.reload = reload

    async def control(
        self, url: str, path: str, payload: object, request_id: str, connect_s: float
    ) -> dict[str, object]:
        self.reload()
        return {"tokens": LONG, "max_model_len": 8192}


async def test_a_config_reload_while_tokenizing_does_not_split_the_request() -> None:
    """The request plans on the config it started with: a threshold raised while its prompt was
    being tokenized must not leave a handoff without its length budget (a 500 on the cluster)."""
    rig = Rig((D1,), (P1,))
    raised = replace(rig.config, routing=replace(rig.config.routing, threshold=100_000))
    rig.upstream = ReloadingUpstream(lambda: rig.state.set_pool(raised))
    rig.dispatcher.upstream = rig.upstream  # type: ignore[assignment]
    reply = await rig.serve("word " * 1500)  # text: the router asks /tokenize for its exact count
    assert reply.body == b'{"handoff": true}'  # planned on the threshold it began under
    job = rig.connector.jobs[0]
    assert job.budget == 8  # the request's max_tokens
    assert set(rig.in_flight()) == {0}
