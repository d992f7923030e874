"""The autoscaler inside the reconcile, against the in-memory API: router pods found by their
EndpointSlices and scraped over an httpx transport that serves prometheus_client text, time on a
test clock. Replicas flow through the same builders; External mode hands them to an HPA without a
drop; conflicts are conditions."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from operator_memory_api import MemoryApi, pool_body
from router_signals import ContractRouter

from tandem.api import Condition, InferencePoolStatus
from tandem.operator.controller import Controller
from tandem.operator.naming import REPLICAS_OWNER_ANNOTATION
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import OperatorSettings

KEY = ("serving", "sim-llama")
PLANNER = catalog_planner()
# Shortened windows, as a test pool would set them.
PLANNER_MODE = {
    "mode": "Planner",
    "interval": "10s",
    "window": "20s",
    "scaleUpStabilization": "20s",
    "scaleDownStabilization": "60s",
    "maxReplicas": {"prefill": 4, "decode": 4},
}


class Cluster:
    """The in-memory API with router pods behind the router Service, and a clock."""

    def __init__(self) -> None:
        self.api = MemoryApi()
        self.api.served |= {"discovery.k8s.io": ["discovery.k8s.io/v1"], "autoscaling": ["autoscaling/v2"]}
        self.now = 1000.0
        self.routers: dict[str, ContractRouter] = {}
        self.down: set[str] = set()
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self._serve))
        self.controller = self.new_controller()

    def new_controller(self) -> Controller:
        """An operator on this API, clock and metrics transport (a second one: a restart)."""
        return Controller(
            OperatorSettings(),
            PLANNER,
            self.api,
            instance="test",
            clock=lambda: self.now,
            metrics_http=self.http,
        )

    def _serve(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down or host not in self.routers or request.url.path != "/metrics":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, text=self.routers[host].text())

    def add_router(self, ip: str) -> ContractRouter:
        self.routers[ip] = ContractRouter()
        endpoints = [
            {
                "addresses": [address],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": f"router-{address}"},
            }
            for address in self.routers
        ]
        self.api.objects["EndpointSlice", "sim-llama-router-x1"] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "sim-llama-router-x1",
                "namespace": "serving",
                "labels": {"kubernetes.io/service-name": "sim-llama-router"},
            },
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        }
        return self.routers[ip]

    def create(self, **spec: Any) -> None:
        self.controller.cache.observe_pool(None, self.api.store_pool(pool_body(**spec)))

    def update(self, **spec: Any) -> None:
        body = copy.deepcopy(self.api.pools[KEY])
        body["spec"].update(spec)
        meta = body["metadata"]
        meta.update(generation=meta["generation"] + 1, resourceVersion=str(next(self.api.versions)))
        self.controller.cache.observe_pool("MODIFIED", self.api.store_pool(body))

    async def interval(self, seconds: float = 10.0) -> None:
        """Time passes; the requeue the reconcile asked for comes (here: now, on the test clock)."""
        self.now += seconds
        self.controller.queue.add(KEY)
        await self.controller.queue.join()

    async def planner_pool(self, **spec: Any) -> None:
        """A pool in mode Planner (PLANNER_MODE) behind one router replica, reconciled."""
        self.add_router("10.0.0.1")
        self.create(autoscaling=PLANNER_MODE, **spec)
        await self.controller.queue.join()

    async def load(self, rps: float, intervals: int) -> None:
        """``rps`` for ``intervals`` intervals, each reconciled at its end."""
        for _ in range(intervals):
            self.serve(rps)
            await self.interval()

    def serve(self, rps: float, seconds: float = 10.0, **figures: Any) -> None:
        """``rps`` over ``seconds``, spread evenly over the router replicas; prompts as the pool
        declares them (mean 2000, p90 about 6000: four in five of 1000 tokens, one of 6000)."""
        share = round(rps * seconds / len(self.routers))
        for router in self.routers.values():
            router.serve(share - share // 5, prompt=1000, itl_gaps=2, **figures)
            router.serve(share // 5, prompt=6000, itl_gaps=2, **figures)

    def replicas(self, role: str) -> int | None:
        body = self.api.objects.get(("Deployment", f"sim-llama-{role}"))
        return None if body is None else body["spec"].get("replicas")

    def ready(self) -> None:
        """The Deployment controller's report: every replica of every Deployment ready."""
        for key, body in list(self.api.objects.items()):
            if key[0] != "Deployment":
                continue
            replicas = body["spec"].get("replicas", 1)
            ready = copy.deepcopy(body)
            ready["metadata"].update(generation=1, resourceVersion=str(next(self.api.versions)))
            ready["status"] = {
                "observedGeneration": 1,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
            }
            self.api.objects[key] = ready
            self.controller.cache.observe_child("MODIFIED", ready)

    def hpa_scales(self, role: str, replicas: int) -> None:
        """An HPA's write of the Deployment's scale subresource, and its watch event."""
        body = self.api.objects["Deployment", f"sim-llama-{role}"]
        body["spec"]["replicas"] = replicas
        body["metadata"]["resourceVersion"] = str(next(self.api.versions))
        self.controller.cache.observe_child("MODIFIED", copy.deepcopy(body))

    @property
    def status(self) -> InferencePoolStatus:
        record = self.controller.cache.get(KEY)
        assert record is not None and record.status is not None
        return record.status

    def condition(self, kind: str = "Autoscaling") -> Condition | None:
        return next((c for c in self.status.conditions if c.type == kind), None)

    def events(self, reason: str) -> list[str]:
        return [e["message"] for e in self.api.events if e["reason"] == reason]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    running = Cluster()
    await running.controller.start()
    yield running
    await running.controller.stop()
    await running.http.aclose()


async def test_load_above_the_plan_scales_both_roles_up_with_status_and_an_event(cluster: Cluster) -> None:
    cluster.add_router("10.0.0.1")
    cluster.add_router("10.0.0.2")
    cluster.create(autoscaling=PLANNER_MODE)
    await cluster.controller.queue.join()
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (1, 1)  # the plan's, at 2/s
    scaling = cluster.status.autoscaling
    assert scaling is not None and scaling.desired is not None
    assert scaling.last_decision == "holding prefill 1, decode 1: waiting for a window of metrics"
    condition = cluster.condition()
    assert condition is not None and (condition.status, condition.reason) == ("True", "Planner")

    cluster.serve(40)  # 40 requests/s, three times what one prefill replica sustains
    await cluster.interval()
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (1, 1)  # up after 20 s only
    cluster.serve(40)
    await cluster.interval()
    # Decode takes four: two run the batch, but 40/s's handoffs in flight need four decoders' PD
    # buffers (at most 5.25 GiB each beside vLLM on an H100: planner/pd_buffer.py).
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (3, 4)
    scaling = cluster.status.autoscaling
    assert scaling is not None and scaling.observed is not None
    assert scaling.observed.requests_per_second == pytest.approx(40)
    assert scaling.observed.prompt_tokens_p90 is not None and scaling.observed.slo_attainment == 1.0
    assert scaling.desired is not None and (scaling.desired.prefill, scaling.desired.decode) == (3, 4)
    assert scaling.last_scale_time is not None
    assert scaling.last_decision is not None and scaling.last_decision.startswith(
        "scaled up prefill 1->3, decode 1->4: 40 requests/s"
    )
    assert cluster.events("Scaled") == [scaling.last_decision]
    cluster.serve(40)
    await cluster.interval()
    scaling = cluster.status.autoscaling
    assert (
        scaling is not None
        and scaling.last_decision == "holding prefill 3, decode 4: the load needs prefill 3, decode 4"
    )
    assert len(cluster.events("Scaled")) == 1
    # The plan in status is the plan (for the declared 2 requests/s); the roles show what runs.
    plan = cluster.status.plan
    assert plan is not None and plan.prefill is not None and plan.prefill.replicas == 1
    decode = cluster.status.decode
    assert decode is not None and decode.replicas == 4


async def test_at_steady_state_nothing_is_applied_and_the_status_rarely_changes(cluster: Cluster) -> None:
    await cluster.planner_pool()
    await cluster.load(20, intervals=4)
    cluster.ready()
    await cluster.controller.queue.join()
    cluster.api.writes.clear()
    for i in range(30):  # five minutes of 20 requests/s, +-5 % from one interval to the next
        cluster.serve(20 * (1.05 if i % 2 else 0.95))
        await cluster.interval()
    assert [w for w in cluster.api.writes if w[0] != "status"] == []
    assert len(cluster.api.writes) <= 2


async def test_no_traffic_returns_to_min_replicas_after_the_scale_down_window(cluster: Cluster) -> None:
    await cluster.planner_pool()
    await cluster.load(40, intervals=3)
    assert cluster.replicas("prefill") == 3
    seen = []
    for _ in range(9):  # nothing for 90 s; the scale-down window is 60 s
        await cluster.interval()
        seen.append((cluster.replicas("prefill"), cluster.replicas("decode")))
    assert seen[0] == (3, 4) and seen[-1] == (0, 1)  # minReplicas: prefill 0, decode 1
    assert cluster.status.autoscaling is not None
    assert "no traffic" in (cluster.status.autoscaling.last_decision or "")


async def test_metrics_unreachable_for_a_window_is_a_condition_and_the_replicas_hold(
    cluster: Cluster,
) -> None:
    await cluster.planner_pool()
    await cluster.load(40, intervals=3)
    cluster.down.add("10.0.0.1")
    for _ in range(3):  # the router Deployment reports no ready replica yet: starting, no alarm
        await cluster.interval()
    condition = cluster.condition()
    assert condition is not None and condition.status == "True"
    scaling = cluster.status.autoscaling
    assert scaling is not None and "no router answered on /metrics" in (scaling.last_decision or "")
    cluster.ready()
    for _ in range(3):
        await cluster.interval()
    condition = cluster.condition()
    assert condition is not None and (condition.status, condition.reason) == ("False", "MetricsUnavailable")
    assert "no router answered on /metrics: router-10.0.0.1" in condition.message
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (3, 4)
    assert cluster.events("MetricsUnavailable")


async def test_pinned_replicas_are_a_conflict_not_a_fight(cluster: Cluster) -> None:
    await cluster.planner_pool(decode={"replicas": 1})
    await cluster.load(40, intervals=3)
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (3, 1)
    condition = cluster.condition()
    assert condition is not None and (condition.status, condition.reason) == ("False", "AutoscalingConflict")
    assert "spec.decode.replicas is pinned" in condition.message
    assert cluster.events("AutoscalingConflict")


async def test_an_hpa_on_a_planner_pools_workload_takes_its_replicas_and_is_a_conflict(
    cluster: Cluster,
) -> None:
    await cluster.planner_pool()
    cluster.api.objects["HorizontalPodAutoscaler", "decode"] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "decode", "namespace": "serving"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sim-llama-decode"}
        },
    }
    await cluster.load(40, intervals=3)
    decode = cluster.api.objects["Deployment", "sim-llama-decode"]
    assert decode["metadata"]["annotations"][REPLICAS_OWNER_ANNOTATION] == "external"
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (3, 1)  # decode is the HPA's
    condition = cluster.condition()
    assert condition is not None and condition.reason == "AutoscalingConflict"
    assert "HorizontalPodAutoscaler decode scales Deployment sim-llama-decode" in condition.message
    cluster.hpa_scales("decode", 4)
    await cluster.interval()
    assert cluster.replicas("decode") == 4


async def test_external_mode_sets_replicas_at_creation_then_leaves_them(cluster: Cluster) -> None:
    cluster.create(autoscaling={"mode": "External"}, decode={"replicas": 2})
    await cluster.controller.queue.join()
    decode = cluster.api.objects["Deployment", "sim-llama-decode"]
    assert (
        decode["spec"]["replicas"] == 2
        and decode["metadata"]["annotations"][REPLICAS_OWNER_ANNOTATION] == "external"
    )
    condition = cluster.condition()
    assert condition is not None and (condition.status, condition.reason) == ("True", "External")
    assert cluster.status.autoscaling is None
    cluster.hpa_scales("decode", 6)
    cluster.api.writes.clear()
    cluster.update(router={"replicas": 2})  # a spec change re-applies every changed child
    await cluster.controller.queue.join()
    assert cluster.replicas("decode") == 6
    status_decode = cluster.status.decode
    assert status_decode is not None and status_decode.replicas == 6  # desired as the HPA set it


async def test_switching_a_running_pool_to_external_keeps_its_replicas(cluster: Cluster) -> None:
    """Before the handover, the operator's apply without replicas reset the Deployment to 1."""
    await cluster.planner_pool()
    await cluster.load(40, intervals=3)
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (3, 4)
    cluster.update(autoscaling={"mode": "External"})
    await cluster.controller.queue.join()
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (3, 4)
    cluster.update(autoscaling=PLANNER_MODE)  # and back: the operator's apply takes them again
    await cluster.controller.queue.join()
    decode = cluster.api.objects["Deployment", "sim-llama-decode"]
    assert decode["metadata"]["annotations"][REPLICAS_OWNER_ANNOTATION] == "operator"
    assert decode["spec"]["replicas"] == 4


async def test_a_restarted_operator_keeps_the_replicas_for_a_scale_down_window(cluster: Cluster) -> None:
    await cluster.planner_pool()
    await cluster.load(40, intervals=3)
    assert cluster.replicas("prefill") == 3
    await cluster.controller.stop()
    restarted = cluster.controller = cluster.new_controller()
    await restarted.start()
    restarted.cache.observe_pool(None, copy.deepcopy(cluster.api.pools[KEY]))
    await restarted.queue.join()
    for _ in range(3):  # no traffic, 30 s: within the 60 s scale-down window
        await cluster.interval()
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (3, 4)
    for _ in range(5):
        await cluster.interval()
    assert (cluster.replicas("prefill"), cluster.replicas("decode")) == (0, 1)


async def test_a_spec_change_is_decided_at_once_not_at_the_next_interval(cluster: Cluster) -> None:
    await cluster.planner_pool()
    await cluster.load(40, intervals=2)
    assert cluster.replicas("prefill") == 3
    cluster.update(autoscaling={**PLANNER_MODE, "maxReplicas": {"prefill": 2, "decode": 4}})
    await cluster.controller.queue.join()  # no time passed
    assert cluster.replicas("prefill") == 2
    scaling = cluster.status.autoscaling
    assert scaling is not None and "capped at maxReplicas.prefill=2" in (scaling.last_decision or "")


async def test_a_pool_that_turned_undeployable_is_not_asked_back_at_once(cluster: Cluster) -> None:
    """Before: its autoscaler's decision stayed due, so each reconcile asked for the next one at
    once, in a loop, until the spec was fixed."""
    await cluster.planner_pool()
    cluster.update(maxGpus=1)  # the plan needs 2: Infeasible
    await cluster.controller.queue.join()
    planned = cluster.condition("Planned")
    assert planned is not None and planned.reason == "Infeasible"
    cluster.now += 60
    again = await cluster.controller.reconciler.reconcile(KEY, failures=0, retry_in=1.0)
    assert again is not None and again >= 10  # the interval, not 0
