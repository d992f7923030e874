"""The router's live view of its pools: readiness of a router serving several (a shared router)."""

from __future__ import annotations

import pytest

from tandem.router.decision import Role
from tandem.router.endpoints import EndpointAddress, EndpointRegistry
from tandem.router.errors import ModelNotFoundError
from tandem.router.metrics import RouterMetrics
from tandem.router.pool import PoolConfig
from tandem.router.state import RouterState


def state_of(*pools: str) -> RouterState:
    state = RouterState(
        EndpointRegistry(), RouterMetrics(), max_inflight_per_decode=8, retry_after_s=1, handoff_timeout_s=5
    )
    for name in pools:
        state.set_pool(PoolConfig(name=name, model=f"model-{name}"))
    return state


def test_a_router_of_several_pools_is_ready_while_one_of_them_has_a_decoder() -> None:
    state = state_of("a", "b")
    assert state.not_ready() == ["pool a: discovery not synced", "pool b: discovery not synced"]
    state.mark_synced("a")
    state.set_endpoints("a", Role.DECODE, [EndpointAddress("http://10.0.0.1:8000")])
    assert state.not_ready() == ["pool b: discovery not synced"]  # every pool's discovery first
    state.mark_synced("b")
    assert state.not_ready() == []  # pool b has no decoder: model-a is served all the same
    assert state.pool_for("model-b").config.name == "b"
    state.set_endpoints("a", Role.DECODE, [])
    assert state.not_ready() == [
        "pool a: no decode endpoint available",
        "pool b: no decode endpoint available",
    ]


def test_a_router_of_one_pool_needs_its_decoder() -> None:
    state = state_of("a")
    state.mark_synced("a")
    assert state.not_ready() == ["pool a: no decode endpoint available"]


def test_a_deleted_pool_leaves_a_router_of_several_and_the_last_one_stays() -> None:
    state = state_of("a", "b")
    for name in ("a", "b"):
        state.mark_synced(name)
        state.set_endpoints(name, Role.DECODE, [EndpointAddress(f"http://10.0.0.{len(name)}:8000")])
    state.drop_pool("b")
    assert list(state.pools) == ["a"] and state.registry.states("b", Role.DECODE) == []
    with pytest.raises(ModelNotFoundError):
        state.pool_for("model-b")
    state.drop_pool("a")  # the router goes with its last pool: it serves on until then
    assert state.pool_for("model-a").config.name == "a" and state.not_ready() == []
