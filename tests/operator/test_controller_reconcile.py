"""The controller's reconcile against an in-memory API: writes only what changed, prunes, reports."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_memory_api import EXAMPLE, MemoryApi, pool_body

from tandem.api import GROUP, Condition, InferencePoolStatus
from tandem.cli import main
from tandem.operator.controller import Controller
from tandem.operator.kube import KubeError, NotFoundError
from tandem.operator.planning import catalog_planner
from tandem.operator.reconciler import DISCOVERY_POLL_SECONDS, ESTABLISHED_SETTLE_SECONDS, REDISCOVER_SECONDS
from tandem.operator.settings import OperatorSettings
from tandem.planner import Plan

KEY = ("serving", "sim-llama")
Running = tuple[Controller, MemoryApi]


def ready_deployment(body: dict[str, Any]) -> dict[str, Any]:
    """What the Deployment controller reports once every replica is ready."""
    ready = copy.deepcopy(body)
    replicas = ready["spec"]["replicas"]
    ready["metadata"].update(
        generation=1, resourceVersion=str(int(ready["metadata"]["resourceVersion"]) + 1000)
    )
    ready["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
    }
    return ready


# Retries in milliseconds, so tests see several without waiting.
FAST_RETRIES = OperatorSettings(retry_base_seconds=0.001, retry_max_seconds=0.004)


async def until(predicate: Callable[[], object], within: float = 10.0) -> None:
    """Poll ``predicate`` on the event loop until it holds, or fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def status(running: Controller, key: tuple[str, str] = KEY) -> InferencePoolStatus | None:
    record = running.cache.get(key)
    return record.status if record is not None else None


def condition(running: Controller, kind: str = "Ready", key: tuple[str, str] = KEY) -> Condition:
    written = status(running, key)
    assert written is not None
    return next(c for c in written.conditions if c.type == kind)


def warnings(api: MemoryApi) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for e in api.events if e["type"] == "Warning"]


@pytest.fixture
async def controller() -> AsyncIterator[Running]:
    api = MemoryApi()
    running = Controller(FAST_RETRIES, catalog_planner(), api, instance="test")
    await running.start()
    yield running, api
    await running.stop()


async def test_first_reconcile_applies_everything_then_nothing(controller: Running) -> None:
    running, api = controller
    running.cache.observe_pool(None, api.store_pool(pool_body()))
    await running.queue.join()
    applied = [w for w in api.writes if w[0] == "apply"]
    assert len(applied) == len(api.objects) == 14
    assert ("status", "sim-llama") in api.writes
    assert {e["reason"] for e in api.events} == {"Planned", "Created"}
    for body in list(api.objects.values()):  # the watch's echo of the operator's own writes
        running.cache.observe_child("MODIFIED", body)
    assert len(running.queue) == 0  # echoes carry nothing new: no reconcile queued
    api.writes.clear()
    running.queue.add(KEY)  # as a resync does
    await running.queue.join()
    assert running.metrics.reconciles.labels("ok")._value.get() == 2
    assert api.writes == []


async def test_workloads_turning_ready_make_the_pool_ready(controller: Running) -> None:
    running, api = controller
    running.cache.observe_pool(None, api.store_pool(pool_body()))
    await running.queue.join()
    api.writes.clear()
    for key, body in list(api.objects.items()):
        running.cache.observe_child("MODIFIED", ready_deployment(body) if key[0] == "Deployment" else body)
    await running.queue.join()
    assert api.writes == [("status", "sim-llama")]
    assert condition(running).status == "True"
    assert "Ready" in {e["reason"] for e in api.events}


async def test_hand_deleted_child_is_restored(controller: Running) -> None:
    running, api = controller
    running.cache.observe_pool(None, api.store_pool(pool_body()))
    await running.queue.join()
    api.writes.clear()
    service = api.objects.pop(("Service", "sim-llama-decode"))
    running.cache.observe_child("DELETED", service)
    await running.queue.join()
    assert [w for w in api.writes if w[0] == "apply"] == [("apply", "Service/sim-llama-decode")]
    assert any(e["reason"] == "Restored" for e in api.events)


async def test_children_no_longer_wanted_are_pruned(controller: Running) -> None:
    running, api = controller
    running.cache.observe_pool(None, api.store_pool(pool_body()))
    await running.queue.join()
    nixl = pool_body(disaggregation={"mode": "Always", "kvTransfer": {"connector": "nixl"}})
    nixl["metadata"].update(generation=2, resourceVersion="2")
    api.writes.clear()
    running.cache.observe_pool("MODIFIED", api.store_pool(nixl))
    await running.queue.join()
    deleted = sorted(w[1] for w in api.writes if w[0] == "delete")
    assert deleted == [
        "ConfigMap/sim-llama-decode-lmcache",
        "ConfigMap/sim-llama-prefill-lmcache",
        "Service/sim-llama-kv-notify",  # NIXL has no notifications
    ]


async def test_a_restarted_operator_finds_the_children_and_writes_nothing(controller: Running) -> None:
    running, api = controller
    running.cache.observe_pool(None, api.store_pool(pool_body()))
    await running.queue.join()
    record = running.cache.get(KEY)
    assert record is not None and record.pool is not None
    api.writes.clear()
    api.events.clear()
    restarted = Controller(FAST_RETRIES, catalog_planner(), api, instance="test")
    await restarted.start()  # lists the children before the first reconcile
    try:
        restarted.cache.observe_pool(None, record.pool)  # kopf's first listing of the pool
        await restarted.queue.join()
        assert restarted.metrics.reconciles.labels("ok")._value.get() == 1
    finally:
        await restarted.stop()
    assert api.writes == [] and api.events == []


class DeletedWhileWritingStatus(MemoryApi):
    """The pool is deleted while its status write is answered; the garbage collector then
    removes its children, each with a watch event."""

    def __init__(self) -> None:
        super().__init__()
        self.watch: Controller | None = None

    async def write_pool_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        answer = await super().write_pool_status(namespace, name, status)
        assert self.watch is not None
        self.watch.cache.observe_pool("DELETED", self.pools.pop((namespace, name)))
        for body in self.objects.values():
            self.watch.cache.observe_child("DELETED", body)
        self.objects.clear()
        return answer


async def test_a_pool_deleted_while_its_status_was_written_stays_deleted() -> None:
    """Before: the write's answer put the pool back in the cache, so each resync re-created the
    children of a pool that no longer existed (and the garbage collector deleted them again)."""
    api = DeletedWhileWritingStatus()
    running = api.watch = Controller(FAST_RETRIES, catalog_planner(), api, instance="test")
    await running.start()
    try:
        running.cache.observe_pool(None, api.store_pool(pool_body()))
        await running.queue.join()
        assert running.cache.pools() == []
        api.writes.clear()
        running.queue.add(KEY)  # a stray trigger
        await running.queue.join()
    finally:
        await running.stop()
    assert api.writes == [] and api.objects == {}


def multi_node_pool() -> dict[str, Any]:
    """The 70B example with instances across two nodes (a LeaderWorkerSet each), as stored."""
    body: dict[str, Any] = yaml.safe_load((EXAMPLE.parent / "llama-3.1-70b-h100.yaml").read_text())
    body["metadata"].update(namespace="serving", uid="pool-uid", generation=1, resourceVersion="1")
    stages = {"tensorParallel": 4, "pipelineParallel": 4}  # 16 GPUs: two nodes of 8 per instance
    body["spec"].update(prefill=stages, decode=stages)
    body["spec"]["disaggregation"]["kvTransfer"] = {"connector": "nixl"}  # LMCache needs PP=1
    return body


async def test_a_pool_waiting_for_a_leader_worker_set_looks_again_once_discovery_is_stale() -> None:
    """Installing the LeaderWorkerSet CRD makes no event on the pool; the pool's reconciles ask
    discovery again, but not more often than every REDISCOVER_SECONDS."""
    now = 0.0
    api = MemoryApi()
    running = Controller(FAST_RETRIES, catalog_planner(), api, instance="test", clock=lambda: now)
    body, key = multi_node_pool(), ("serving", "llama-70b")
    await running.start()
    try:
        running.cache.observe_pool(None, api.store_pool(body))
        await running.queue.join()
        assert condition(running, key=key).reason == "LeaderWorkerSetMissing"
        api.served["leaderworkerset.x-k8s.io"] = ["leaderworkerset.x-k8s.io/v1"]
        now = REDISCOVER_SECONDS / 2
        running.queue.add(key)
        await running.queue.join()
        assert condition(running, key=key).reason == "LeaderWorkerSetMissing"  # discovery is recent
        now = REDISCOVER_SECONDS * 1.5
        running.queue.add(key)  # the requeue the first reconcile asked for, due now
        await running.queue.join()
    finally:
        await running.stop()
    assert condition(running, key=key).reason == "ReplicasNotReady"
    assert {name for kind, name in api.objects if kind == "LeaderWorkerSet"} == {
        "llama-70b-prefill",
        "llama-70b-decode",
    }


async def test_infeasible_pool_is_a_status_not_an_error(controller: Running) -> None:
    running, api = controller
    body = pool_body(
        model={"name": "meta-llama/Llama-3.1-70B-Instruct"}, accelerator={"type": "L4", "gpusPerNode": 1}
    )
    running.cache.observe_pool(None, api.store_pool(body))
    await running.queue.join()
    assert api.objects == {}
    assert api.writes == [("status", "sim-llama")]
    ready = condition(running)
    assert (ready.status, ready.reason) == ("False", "Infeasible")


async def test_a_fresh_pool_applies_a_role_binding_after_its_role(controller: Running) -> None:
    """Before: the Role and its RoleBinding went out at once, the binding was refused (404), and
    every new pool showed ApplyFailed on all conditions before it converged."""
    running, api = controller
    running.cache.observe_pool(None, api.store_pool(pool_body()))
    await running.queue.join()
    assert warnings(api) == []
    assert running.metrics.errors.labels("ApplyError")._value.get() == 0
    written = status(running)
    assert written is not None
    assert {c.reason for c in written.conditions} <= {
        "Planned",
        "RollingOut",
        "ReplicasNotReady",
        "NotServing",
    }
    order = [w[1].partition("/")[0] for w in api.writes if w[0] == "apply"]
    assert order.index("RoleBinding") > order.index("Role")
    assert min(i for i, kind in enumerate(order) if kind == "Deployment") > max(
        order.index(kind) for kind in ("ServiceAccount", "ConfigMap", "RoleBinding")
    )


async def test_refused_apply_is_a_condition_and_an_event_with_the_servers_message(
    controller: Running,
) -> None:
    running, api = controller
    api.refuse = lambda manifest: KubeError(403, "admission webhook denied the request", reason="Forbidden")
    running.cache.observe_pool(None, api.store_pool(pool_body()))
    await until(lambda: running.metrics.errors.labels("ApplyError")._value.get() >= 3)
    ready = condition(running)
    assert ready.reason == "ApplyFailed"
    assert ready.message.startswith("the API server refused ConfigMap/sim-llama-prefill-lmcache, ")
    assert ": admission webhook denied the request (HTTP 403 Forbidden); next attempt in " in ready.message
    assert condition(running, "Planned").status == "True"  # the plan is sound; the apply is not
    assert [reason for reason, _ in warnings(api)] == ["ApplyFailed"]  # once, not per retry
    assert "admission webhook denied the request" in warnings(api)[0][1]


async def test_duplicate_env_500_is_a_refusal_not_a_retry_loop(controller: Running) -> None:
    """The API server answers server-side apply of two env entries of one name with a 500 and no
    reason (the body as a 1.20 apiserver sends it). Before: a 500 counted as transient, so the
    operator retried forever with no condition and no Event."""
    running, api = controller
    duplicate = (
        'failed to create typed patch object: .spec.template.spec.containers[name="engine"].env: '
        'duplicate entries for key [name="PYTHONHASHSEED"]'
    )
    api.refuse = lambda manifest: KubeError(500, duplicate) if manifest["kind"] == "Deployment" else None
    running.cache.observe_pool(None, api.store_pool(pool_body()))
    await until(lambda: status(running) is not None and condition(running).reason == "ApplyFailed")
    message = condition(running).message
    assert message.startswith(
        "the API server refused Deployment/sim-llama-prefill, Deployment/sim-llama-decode"
    )
    assert f"{duplicate} (HTTP 500); next attempt in 0.001 s" in message
    assert [reason for reason, _ in warnings(api)] == ["ApplyFailed"]


async def test_transient_failures_stay_quiet_then_show_with_attempt_and_delay(controller: Running) -> None:
    running, api = controller
    busy = KubeError(503, "the server is currently unable to handle the request", reason="ServiceUnavailable")
    api.refuse = lambda manifest: busy
    running.cache.observe_pool(None, api.store_pool(pool_body()))
    await until(lambda: ("status", "sim-llama") in api.writes)
    ready = condition(running)  # first written on the third failure: the first two stayed quiet
    assert ready.reason == "ApplyRetrying"
    assert ready.message.endswith(
        ": the server is currently unable to handle the request (HTTP 503 ServiceUnavailable); "
        "attempt 3, next in 0.004 s"
    )
    await until(lambda: running.metrics.errors.labels("ApplyError")._value.get() >= 6)
    assert condition(running).message.endswith("next in 0.004 s")  # the delay stays at its cap
    api.refuse = lambda manifest: None  # the API server recovers
    await until(lambda: condition(running).reason == "ReplicasNotReady")
    assert [reason for reason, _ in warnings(api)] == ["ApplyRetrying"]


HETEROGENEOUS = """
apiVersion: tandem.dev/v1alpha1
kind: InferencePool
metadata: {name: mixed}
spec:
  model: {name: meta-llama/Llama-3.1-8B-Instruct}
  accelerator: {type: h100, prefill: {type: h200}, decode: {type: a100-80gb}}
  disaggregation: {mode: Always}
"""


@pytest.mark.parametrize(
    "manifest",
    [*sorted(EXAMPLE.parent.glob("*.yaml")), "heterogeneous"],
    ids=lambda m: m if isinstance(m, str) else m.name,
)
async def test_tandem_plan_f_prints_the_plan_the_operator_writes_to_status(
    manifest: Path | str, controller: Running, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Before: only the operator could plan a pool file; and a placement named by an alias showed
    the alias in status.plan, not the catalog's name the planner reports."""
    if isinstance(manifest, str):
        manifest = tmp_path / "pool.yaml"
        manifest.write_text(HETEROGENEOUS)
    code = main(["plan", "-f", str(manifest), "--json"])
    planned = Plan.model_validate_json(capsys.readouterr().out)
    assert code == (0 if planned.feasible else 1)
    running, api = controller
    body = yaml.safe_load(manifest.read_text())
    body["metadata"].update(namespace="serving", uid="pool-uid", generation=1, resourceVersion="1")
    running.cache.observe_pool(None, api.store_pool(body))
    await running.queue.join()
    written = status(running, ("serving", body["metadata"]["name"]))
    assert written is not None and written.plan == planned.to_status()


GIE_GROUP = "inference.networking.k8s.io"
LWS_GROUP = "leaderworkerset.x-k8s.io"


def crd_event_body(group: str, *, established: bool = True, deleting: bool = False) -> dict[str, Any]:
    """A CRD as its watch reports it: enough for the operator's capability check."""
    meta: dict[str, Any] = {"name": f"things.{group}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"group": group, "versions": [{"name": "v1", "served": True}]},
        "status": {"conditions": [{"type": "Established", "status": str(established)}]},
    }


class FakeTime:
    """The controller's clock and sleep: sleeping moves the clock, and ``listed_after`` makes
    discovery list a group's versions only once that many sleeps have passed (as the API server
    does while it registers a new CRD)."""

    def __init__(self, api: MemoryApi) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.listed_after: dict[str, tuple[int, list[str]]] = {}
        self._api = api

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for group, (after, versions) in self.listed_after.items():
            if len(self.sleeps) >= after:
                self._api.served[group] = versions


@pytest.fixture
async def timed() -> AsyncIterator[tuple[Controller, MemoryApi, FakeTime]]:
    api = MemoryApi()
    time = FakeTime(api)
    running = Controller(
        FAST_RETRIES, catalog_planner(), api, instance="test", clock=time.clock, sleep=time.sleep
    )
    await running.start()
    yield running, api, time
    await running.stop()


async def test_a_leader_worker_set_crd_installed_later_is_used_at_once(
    timed: tuple[Controller, MemoryApi, FakeTime],
) -> None:
    """Before: installing the CRD made no event on the pool, which looked again only after
    REDISCOVER_SECONDS (30 s); and discovery lists a new CRD before it is Established, when its
    requests still answer 404."""
    running, api, time = timed
    body, key = multi_node_pool(), ("serving", "llama-70b")
    running.cache.observe_pool(None, api.store_pool(body))
    await running.queue.join()
    assert condition(running, key=key).reason == "LeaderWorkerSetMissing"

    api.served[LWS_GROUP] = [f"{LWS_GROUP}/v1"]  # listed before it is Established
    await running.observe_crd("ADDED", crd_event_body(LWS_GROUP, established=False))
    assert running.reconciler.caps.lws_api_version is None and len(running.queue) == 0
    await running.observe_crd("MODIFIED", crd_event_body(LWS_GROUP))
    assert time.sleeps == [ESTABLISHED_SETTLE_SECONDS]  # listed already: only the moment to be routed
    await running.queue.join()
    assert condition(running, key=key).reason == "ReplicasNotReady"
    assert {name for kind, name in api.objects if kind == "LeaderWorkerSet"} == {
        "llama-70b-prefill",
        "llama-70b-decode",
    }


async def test_the_inference_pool_crd_applied_after_the_operator_is_awaited_before_kopf_looks(
    timed: tuple[Controller, MemoryApi, FakeTime],
) -> None:
    """kopf rescans a CRD's group once ``observe_crd`` returns (operator/handlers.py): Tandem's own
    CRD, applied after the operator started, is awaited in discovery and given the moment to be
    routed, or kopf would never watch pools (or its first list would answer 404); it changes no
    capability. Listed already at the event (the operator's start), it costs no wait."""
    running, _, time = timed
    caps = running.reconciler.caps
    time.listed_after[GROUP] = (2, [f"{GROUP}/v1"])  # as crd_event_body serves
    await running.observe_crd("MODIFIED", crd_event_body(GROUP))
    assert time.sleeps == [DISCOVERY_POLL_SECONDS, DISCOVERY_POLL_SECONDS, ESTABLISHED_SETTLE_SECONDS]
    assert running.reconciler.caps == caps and len(running.queue) == 0
    time.sleeps.clear()
    await running.observe_crd(None, crd_event_body(GROUP))
    assert time.sleeps == []


async def test_gie_pool_follows_its_crd_and_the_gateways_verdict(
    timed: tuple[Controller, MemoryApi, FakeTime],
) -> None:
    running, api, time = timed
    running.cache.observe_pool(
        None, api.store_pool(pool_body(gatewayAPI={"endpointPicker": {"name": "epp"}}))
    )
    await running.queue.join()
    assert (condition(running, "GatewayAccepted").reason, condition(running).status) == (
        "CRDNotInstalled",
        "False",
    )

    time.listed_after[GIE_GROUP] = (2, [f"{GIE_GROUP}/v1"])  # discovery lags the Established CRD
    await running.observe_crd("MODIFIED", crd_event_body(GIE_GROUP))
    assert time.sleeps == [DISCOVERY_POLL_SECONDS, DISCOVERY_POLL_SECONDS, ESTABLISHED_SETTLE_SECONDS]
    await running.queue.join()
    gie = api.objects[("InferencePool", "sim-llama")]
    assert gie["apiVersion"] == f"{GIE_GROUP}/v1"
    assert condition(running, "GatewayAccepted").reason == "NoGateway"
    applied = [w[1].partition("/")[0] for w in api.writes if w[0] == "apply"]
    assert applied[-1] == "InferencePool"  # after the engines it selects

    accepted = {**gie, "metadata": {**gie["metadata"], "resourceVersion": "5000", "generation": 1}}
    verdict = {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1}
    accepted["status"] = {"parents": [{"parentRef": {"name": "inference-gateway"}, "conditions": [verdict]}]}
    api.writes.clear()
    running.cache.observe_child("MODIFIED", accepted)  # the Gateway controller wrote its status
    await running.queue.join()
    gateway = condition(running, "GatewayAccepted")
    assert (gateway.status, gateway.reason) == ("True", "Accepted")
    assert api.writes == [("status", "sim-llama")]  # the status only: the spec is as desired

    api.writes.clear()  # discovery still lists the CRD while it is deleted
    await running.observe_crd("MODIFIED", crd_event_body(GIE_GROUP, deleting=True))
    await running.queue.join()
    assert api.writes == [("delete", "InferencePool/sim-llama"), ("status", "sim-llama")]
    assert condition(running, "GatewayAccepted").reason == "CRDNotInstalled"
    assert condition(running).reason != "ApplyFailed" and warnings(api) == []


def errors(running: Controller) -> float:
    value: float = running.metrics.reconciles.labels("error")._value.get()
    return value


def answers_not_found(api_version: str) -> Callable[[dict[str, Any]], KubeError | None]:
    """Applies of ``api_version`` answered as by an API server that routes it nowhere."""
    return lambda manifest: (
        NotFoundError(404, "404 page not found") if manifest["apiVersion"] == api_version else None
    )


def crd_deleted_before_its_event(
    running: Controller, api: MemoryApi, time: FakeTime, group: str, *, lag: int
) -> None:
    """The CRD of ``group`` deleted, its watch event yet to come: its kind answers "404 page not
    found", discovery stops listing it after ``lag`` more of the operator's sleeps, and its objects
    are deleted with it, whose DELETED events reach the cache first."""
    version = f"{group}/v1"
    api.refuse = answers_not_found(version)
    if lag:
        time.listed_after[group] = (len(time.sleeps) + lag, [])
    else:
        api.served[group] = []
    for key, body in list(api.objects.items()):
        if body["apiVersion"] == version:
            del api.objects[key]
            running.cache.observe_child("DELETED", body)


@pytest.mark.parametrize("lag", [0, 2], ids=["discovery-agrees", "discovery-lags"])
async def test_a_gie_pool_deleted_with_its_crd_is_planned_without_not_retried(
    timed: tuple[Controller, MemoryApi, FakeTime], lag: int
) -> None:
    """Before: the GIE pool's DELETED event came before its CRD's, the pool applied it again and
    "404 page not found" counted a reconcile error (retried until the CRD's event came)."""
    running, api, time = timed
    api.served[GIE_GROUP] = [f"{GIE_GROUP}/v1"]
    await running.observe_crd("MODIFIED", crd_event_body(GIE_GROUP))
    running.cache.observe_pool(
        None, api.store_pool(pool_body(gatewayAPI={"endpointPicker": {"name": "epp"}}))
    )
    unasked, unasked_key = pool_body(), ("serving", "unasked")
    unasked["metadata"].update(name="unasked", uid="unasked-uid")
    running.cache.observe_pool(None, api.store_pool(unasked))
    await running.queue.join()
    assert condition(running, "GatewayAccepted").reason == "NoGateway"
    assert condition(running, "GatewayAccepted", unasked_key).reason == "NotRequested"
    ready, slept = condition(running), len(time.sleeps)

    crd_deleted_before_its_event(running, api, time, GIE_GROUP, lag=lag)
    api.writes.clear()
    await running.queue.join()
    assert time.sleeps[slept:] == [DISCOVERY_POLL_SECONDS] * lag
    assert condition(running, "GatewayAccepted").reason == "CRDNotInstalled"
    assert condition(running) == ready  # untouched: the pool serves through its router either way
    # A pool that never asked for one stops offering it: every pool is looked at again.
    other = status(running, unasked_key)
    assert other is not None and "GatewayAccepted" not in {c.type for c in other.conditions}
    assert sorted(api.writes) == [("status", "sim-llama"), ("status", "unasked")]
    assert errors(running) == 0 and warnings(api) == []

    await running.observe_crd("DELETED", crd_event_body(GIE_GROUP, deleting=True))  # late: no news
    assert len(running.queue) == 0 and running.reconciler.caps.gie_api_version is None


async def test_a_gie_pool_not_routed_while_discovery_lists_it_is_retried(
    timed: tuple[Controller, MemoryApi, FakeTime],
) -> None:
    """A 404 for a kind discovery keeps listing (a CRD just Established, not routed yet) is
    transient, as before, once discovery has been looked at for ESTABLISHED_SETTLE_SECONDS."""
    running, api, time = timed
    api.served[GIE_GROUP] = [f"{GIE_GROUP}/v1"]
    await running.reconciler.discover()  # at start, say: no CRD event, so no settling
    not_routed = answers_not_found(f"{GIE_GROUP}/v1")
    refused: list[str] = []

    def once(manifest: dict[str, Any]) -> KubeError | None:
        answer = None if refused else not_routed(manifest)
        if answer is not None:
            refused.append(manifest["kind"])
        return answer

    api.refuse = once
    running.cache.observe_pool(
        None, api.store_pool(pool_body(gatewayAPI={"endpointPicker": {"name": "epp"}}))
    )
    await until(lambda: ("InferencePool", "sim-llama") in api.objects)
    await running.queue.join()
    assert refused == ["InferencePool"] and errors(running) == 1
    assert time.sleeps == [DISCOVERY_POLL_SECONDS] * int(ESTABLISHED_SETTLE_SECONDS / DISCOVERY_POLL_SECONDS)
    assert running.reconciler.caps.gie_api_version == f"{GIE_GROUP}/v1"
    assert condition(running, "GatewayAccepted").reason == "NoGateway"
    assert condition(running).reason == "ReplicasNotReady"


async def test_a_multi_node_pool_whose_leader_worker_set_crd_goes_waits_for_one_again(
    timed: tuple[Controller, MemoryApi, FakeTime],
) -> None:
    running, api, time = timed
    api.served[LWS_GROUP] = [f"{LWS_GROUP}/v1"]
    await running.observe_crd("MODIFIED", crd_event_body(LWS_GROUP))
    body, key = multi_node_pool(), ("serving", "llama-70b")
    running.cache.observe_pool(None, api.store_pool(body))
    await running.queue.join()
    assert condition(running, key=key).reason == "ReplicasNotReady"

    crd_deleted_before_its_event(running, api, time, LWS_GROUP, lag=0)
    await running.queue.join()
    missing = condition(running, key=key)
    assert (missing.status, missing.reason) == ("False", "LeaderWorkerSetMissing")
    assert errors(running) == 0
    assert [reason for reason, _ in warnings(api)] == ["LeaderWorkerSetMissing"]
    assert not [kind for kind, _ in api.objects if kind == "LeaderWorkerSet"]
