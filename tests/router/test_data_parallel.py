"""DP engines behind one endpoint: the router balances and admits per engine (docs/router.md,
"Data-parallel engines"). The operator renders vLLM's internal DP load balancing only, one API
server per replica over all its ranks (tests/operator/test_data_parallel.py), so an endpoint of a
role whose plan has DP ranks holds `data_parallel` engines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tandem.router.admission import AdmissionQueue, Ticket
from tandem.router.decision import (
    EndpointSnapshot,
    RequestFacts,
    Role,
    Route,
    RoutingPolicy,
    filters,
    plan_route,
    scorers,
)
from tandem.router.endpoints import EndpointAddress, EndpointRegistry
from tandem.router.metrics import RouterMetrics
from tandem.router.pool import PoolConfig, pool_config_from_resource
from tandem.router.state import RouterState

LONG = RequestFacts(prompt_tokens=4000, exact=True)


def _endpoint(n: int, engines: int, role: Role = Role.DECODE, **state: Any) -> EndpointSnapshot:
    return EndpointSnapshot(f"http://10.0.3.{n}:8000", f"10.0.3.{n}", role, engines=engines, **state)


def prefiller(n: int, engines: int = 1, **state: Any) -> EndpointSnapshot:
    return _endpoint(100 + n, engines, Role.PREFILL, **state)


def test_load_and_kv_fill_are_compared_per_engine() -> None:
    """Eight requests over four ranks load each as two do one engine; the scrape's KV gauge, summed
    over the ranks' `engine` labels, is their mean fill once divided."""
    wide, single = _endpoint(1, 4, in_flight=8, kv_usage=2.0), _endpoint(2, 1, in_flight=2, kv_usage=0.5)
    assert wide.load_per_engine == single.load_per_engine == 2
    assert scorers.least_load(wide) == scorers.least_load(single)
    assert scorers.least_load(_endpoint(3, 4, in_flight=4)) > scorers.least_load(single)


def test_a_dp_prefiller_saturates_at_the_limit_per_engine() -> None:
    policy = RoutingPolicy(threshold=1024, prefill_saturation=16)
    decoders = [_endpoint(1, 1)]
    busy = {"in_flight": 40}  # 10 per rank of four: room left; one engine of 40 is saturated
    assert filters.below_load(16)([prefiller(1, engines=4, **busy)])
    assert plan_route(LONG, policy, decoders, [prefiller(1, engines=4, **busy)]).route == Route.PD
    assert plan_route(LONG, policy, decoders, [prefiller(1, **busy)]).route == Route.DIRECT


def test_admission_admits_per_decode_engine() -> None:
    registry = EndpointRegistry()
    state = RouterState(
        registry, RouterMetrics(), max_inflight_per_decode=3, retry_after_s=1, handoff_timeout_s=1.0
    )
    state.set_pool(PoolConfig(name="p", model="m", decode_dp=4))
    state.set_endpoints(
        "p", Role.DECODE, [EndpointAddress("http://10.0.0.1:8000"), EndpointAddress("http://10.0.0.2:8000")]
    )
    admission: AdmissionQueue = state.pools["p"].admission

    async def fill() -> tuple[int, int]:
        for _ in range(3 * 4 * 2):  # per engine, times four ranks, times two endpoints: at once
            await admission.acquire(Ticket())
        waiting = asyncio.ensure_future(admission.acquire(Ticket()))
        await asyncio.sleep(0)
        depth = admission.depth
        waiting.cancel()
        return admission.active, depth

    assert asyncio.run(fill()) == (24, 1)


@pytest.mark.parametrize(("plan", "engines"), [({}, (1, 1)), ({"prefill": 2, "decode": 8}, (2, 8))])
def test_the_pool_reads_its_engines_per_endpoint_from_the_plan(
    plan: dict[str, int], engines: tuple[int, int]
) -> None:
    obj: dict[str, Any] = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "qwen", "namespace": "ns"},
        "spec": {"model": {"name": "Qwen/Qwen3-30B-A3B"}, "accelerator": {"type": "H100-80GB"}},
    }
    roles = {
        role: {"gpuType": "H100-80GB", "tensorParallel": 1, "pipelineParallel": 1, "dataParallel": dp,
               "expertParallel": True, "replicas": 1, "gpus": dp}
        for role, dp in plan.items()
    }  # fmt: skip
    obj["status"] = {"plan": {"feasible": True, **roles}}
    config = pool_config_from_resource(obj, default_threshold=1, prefill_saturation=8)
    assert (config.prefill_dp, config.decode_dp) == engines
