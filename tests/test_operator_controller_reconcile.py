"""The controller's reconcile against an in-memory API: writes only what changed, prunes, reports."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem.operator.controller import Controller
from tandem.operator.kinds import Kind
from tandem.operator.kube import KubeError
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import OperatorSettings

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "simulator-pool.yaml"
KEY = ("serving", "sim-llama")


class MemoryApi:
    """Just enough of KubeClient: objects by (kind, name), resourceVersions, a log of writes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.events: list[dict[str, Any]] = []
        self.versions = itertools.count(100)
        self.fail_applies: int | None = None

    async def served_versions(self, group: str) -> list[str]:
        return ["policy/v1"] if group == "policy" else []

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        return {"items": []}

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.fail_applies is not None:
            raise KubeError(self.fail_applies, "admission webhook denied the request")
        live = copy.deepcopy(manifest)
        key = (manifest["kind"], manifest["metadata"]["name"])
        previous = self.objects.get(key)
        live["metadata"]["uid"] = previous["metadata"]["uid"] if previous else f"uid-{key[1]}-{key[0]}"
        live["metadata"]["resourceVersion"] = str(next(self.versions))
        self.objects[key] = live
        self.writes.append(("apply", "/".join(key)))
        return live

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str) -> None:
        self.objects.pop((kind.kind, name), None)
        self.writes.append(("delete", f"{kind.kind}/{name}"))

    async def write_pool_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("status", name))
        return {
            **pool_body(),
            "status": status,
            "metadata": {**pool_body()["metadata"], "resourceVersion": "9"},
        }

    async def create_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def pool_body(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"].update(namespace="serving", uid="pool-uid", generation=1, resourceVersion="1")
    body["spec"].update(spec)
    return body


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


@pytest.fixture
async def controller() -> Any:
    api = MemoryApi()
    running = Controller(OperatorSettings(), catalog_planner(), instance="test")
    await running.start(api)  # type: ignore[arg-type]
    yield running, api
    await running.stop()


async def test_first_reconcile_applies_everything_then_nothing(controller: Any) -> None:
    running, api = controller
    running.observe_pool(None, pool_body())
    await running.queue.join()
    applied = [w for w in api.writes if w[0] == "apply"]
    assert len(applied) == len(api.objects) == 13
    assert ("status", "sim-llama") in api.writes
    assert {e["reason"] for e in api.events} == {"Planned", "Created"}
    for body in list(api.objects.values()):  # the watch's echo of the operator's own writes
        running.observe_child("MODIFIED", body)
    assert len(running.queue) == 0  # echoes carry nothing new: no reconcile queued
    api.writes.clear()
    await running.reconcile(KEY)  # as a resync would
    assert api.writes == []


async def test_workloads_turning_ready_make_the_pool_ready(controller: Any) -> None:
    running, api = controller
    running.observe_pool(None, pool_body())
    await running.queue.join()
    api.writes.clear()
    for key, body in list(api.objects.items()):
        running.observe_child("MODIFIED", ready_deployment(body) if key[0] == "Deployment" else body)
    await running.queue.join()
    assert api.writes == [("status", "sim-llama")]
    ready = {c.type: c.status for c in running.statuses[KEY].conditions}
    assert ready["Ready"] == "True"
    assert "Ready" in {e["reason"] for e in api.events}


async def test_hand_deleted_child_is_restored(controller: Any) -> None:
    running, api = controller
    running.observe_pool(None, pool_body())
    await running.queue.join()
    api.writes.clear()
    service = api.objects.pop(("Service", "sim-llama-decode"))
    running.observe_child("DELETED", service)
    await running.queue.join()
    assert [w for w in api.writes if w[0] == "apply"] == [("apply", "Service/sim-llama-decode")]
    assert any(e["reason"] == "Restored" for e in api.events)


async def test_children_no_longer_wanted_are_pruned(controller: Any) -> None:
    running, api = controller
    running.observe_pool(None, pool_body())
    await running.queue.join()
    nixl = pool_body(disaggregation={"mode": "Always", "kvTransfer": {"connector": "nixl"}})
    nixl["metadata"].update(generation=2, resourceVersion="2")
    api.writes.clear()
    running.observe_pool("MODIFIED", nixl)
    await running.queue.join()
    deleted = sorted(w[1] for w in api.writes if w[0] == "delete")
    assert deleted == ["ConfigMap/sim-llama-decode-lmcache", "ConfigMap/sim-llama-prefill-lmcache"]


async def test_infeasible_pool_is_a_status_not_an_error(controller: Any) -> None:
    running, api = controller
    body = pool_body(
        model={"name": "meta-llama/Llama-3.1-70B-Instruct"}, accelerator={"type": "L4", "gpusPerNode": 1}
    )
    running.observe_pool(None, body)
    await running.queue.join()
    assert api.objects == {}
    assert api.writes == [("status", "sim-llama")]
    ready = next(c for c in running.statuses[KEY].conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "Infeasible")


async def test_refused_apply_is_reported_and_raised_for_backoff(controller: Any) -> None:
    running, api = controller
    api.fail_applies = 403
    running.observe_pool(None, pool_body())
    await running.queue.join()  # fails, and waits for a retry in 1 s
    ready = next(c for c in running.statuses[KEY].conditions if c.type == "Ready")
    assert (ready.reason, ready.message) == ("ApplyFailed", "admission webhook denied the request")
    assert running.metrics.errors.labels("KubeError")._value.get() == 1
