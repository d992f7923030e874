"""Decoders' PD buffers as a router replica accounts for them: its share, holds, and starvation
(short of room for the smallest handoff for longer than the handoff timeout), on a fake clock."""

from __future__ import annotations

import pytest
from prometheus_text import metric_sum

from tandem.router.decision import Role, RoutingPolicy
from tandem.router.endpoints import EndpointAddress, EndpointRegistry, EndpointState
from tandem.router.metrics import RouterMetrics
from tandem.router.pd_buffer import BufferHold, share_of, starved
from tandem.router.pool import PoolConfig
from tandem.router.state import RouterState

TIMEOUT_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def decoder() -> EndpointState:
    return EndpointState(EndpointAddress("http://10.0.0.1:8000"), "p", Role.DECODE)


def test_replicas_split_the_buffer_they_cannot_see_each_other_fill() -> None:
    assert share_of(100, 1, 4).capacity == 100
    assert share_of(100, 3, 4).capacity == 33
    assert share_of(100, 0, 0) == share_of(100, 1, 1)  # no peers known yet: the whole buffer


def test_a_decoder_short_of_room_for_longer_than_the_timeout_is_starved() -> None:
    clock, state, share = Clock(), decoder(), share_of(10, 1, 2)
    first = BufferHold(state, 6, share, clock)
    assert state.buffer_short_since is None and share.free(state) == 4
    second = BufferHold(state, 3, share, clock)  # 1 free: not enough for the smallest handoff
    assert state.buffer_short_since == clock.now
    clock.now += TIMEOUT_S - 0.1
    assert not starved(state, TIMEOUT_S, clock.now)
    clock.now += 0.1
    assert starved(state, TIMEOUT_S, clock.now)
    second.release()
    second.release()  # idempotent
    assert share.free(state) == 4 and not starved(state, TIMEOUT_S, clock.now)
    first.release()
    assert state.buffer_reserved == 0


@pytest.mark.parametrize("debug", [False, True])
def test_metrics_report_free_chunks_and_starvation_per_decoder_only_in_debug_mode(debug: bool) -> None:
    clock, registry, metrics = Clock(), EndpointRegistry(), RouterMetrics(per_endpoint=debug)
    state = RouterState(
        registry,
        metrics,
        max_inflight_per_decode=8,
        retry_after_s=1,
        handoff_timeout_s=TIMEOUT_S,
        clock=clock,
    )
    metrics.track(registry, state.queue_depths, state.buffer_report)
    routing = RoutingPolicy(threshold=512, pd_chunk_tokens=256)  # the smallest handoff: 2 chunks
    state.set_pool(PoolConfig(name="p", model="m", routing=routing, decoder_buffer_chunks=20))
    state.set_peers("p", ["10.1.0.1:7500", "10.1.0.2:7500"])  # two replicas: 10 chunks each
    state.set_endpoints("p", Role.DECODE, [EndpointAddress("http://10.0.0.1:8000")])
    share = state.buffer_share("p")
    assert share is not None and share.capacity == 10
    (target,) = registry.states("p", Role.DECODE)
    BufferHold(target, 9, share, clock)
    clock.now += TIMEOUT_S
    text = metrics.exposition().decode()
    labels = {"pool": "p", "endpoint": "http://10.0.0.1:8000"} if debug else {"pool": "p"}
    assert ("10.0.0.1" in text) is debug
    assert metric_sum(text, "tandem_router_decoder_pd_buffer_free_chunks", **labels) == 1
    assert metric_sum(text, "tandem_router_decoder_pd_buffer_starved", **labels) == 1
