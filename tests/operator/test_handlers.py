"""kopf's part of the operator: what it watches, and when it looks again at what the cluster serves."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kopf
import pytest

from tandem.operator.handlers import Kopf, build_kopf
from tandem.operator.object_cache import ObjectCache
from tandem.operator.workqueue import WorkQueue

GIE_CRD: dict[str, Any] = {
    "metadata": {"name": "inferencepools.inference.networking.k8s.io"},
    "spec": {"group": "inference.networking.k8s.io", "versions": [{"name": "v1", "served": True}]},
    "status": {"conditions": [{"type": "Established", "status": "True"}]},
}


async def _nothing(_: Any) -> None:
    return None


def crd_handler(running: Kopf) -> Any:
    [handler] = [h for h in running.registry._watching.get_all_handlers() if h.id == "crds"]
    return handler.fn


def test_kopf_does_not_rescan_on_its_own() -> None:
    """kopf's own rescan at a CRD's event comes before discovery lists the new kind (so kopf never
    watched it) or before the API server routes it (a 404 that ends the whole operator)."""
    running = build_kopf(ObjectCache(WorkQueue(_nothing, workers=1)), None, lambda *_: _nothing(None))
    assert running.settings.scanning.disabled


async def test_kopf_rescans_a_crds_group_once_the_operator_has_seen_it_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    served = asyncio.Event()

    async def observe_crd(event_type: str | None, body: dict[str, Any]) -> None:
        calls.append(f"observe {event_type} {body['spec']['group']}")
        await served.wait()  # discovery lists it, the route answers (Reconciler.crd_changed)
        calls.append("served")

    async def rescan(event: kopf.RawEvent) -> None:
        calls.append(f"rescan {event['type']}")

    running = build_kopf(ObjectCache(WorkQueue(_nothing, workers=1)), None, observe_crd)
    monkeypatch.setattr(running, "rescan", rescan)
    handled = asyncio.create_task(crd_handler(running)(event={"type": "MODIFIED", "object": GIE_CRD}))
    for _ in range(10):  # the handler runs up to its wait
        await asyncio.sleep(0)
    assert calls == ["observe MODIFIED inference.networking.k8s.io"]
    served.set()
    await handled
    assert calls == ["observe MODIFIED inference.networking.k8s.io", "served", "rescan MODIFIED"]


async def test_a_crd_being_deleted_is_no_longer_watched_and_its_children_count_as_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once its objects are gone the API server closes the kind's watch, and kopf's list to restart
    it answers 404, which stops the whole operator: kopf stops watching at the first deletion event,
    and is not asked to rescan (discovery may list the kind a while yet)."""
    from kopf._cogs.structs.references import Resource

    seen: list[str | None] = []

    async def observe_crd(event_type: str | None, body: dict[str, Any]) -> None:
        seen.append(event_type)

    async def rescan(event: kopf.RawEvent) -> None:
        raise AssertionError("no rescan for a CRD being deleted")

    cache = ObjectCache(WorkQueue(_nothing, workers=1))
    gie = {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {
            "name": "llama",
            "namespace": "serving",
            "uid": "u1",
            "labels": {"tandem.dev/pool": "llama"},
        },
    }
    cache.observe_child(None, gie)
    running = build_kopf(cache, None, observe_crd)
    monkeypatch.setattr(running, "rescan", rescan)
    watched = Resource(group="inference.networking.k8s.io", version="v1", plural="inferencepools")
    deployments = Resource(group="apps", version="v1", plural="deployments")
    running.insights.watched_resources.update({watched, deployments})
    deleting = {**GIE_CRD, "metadata": {**GIE_CRD["metadata"], "deletionTimestamp": "2026-12-02T00:00:00Z"}}
    deleting["spec"] = {**GIE_CRD["spec"], "names": {"plural": "inferencepools", "kind": "InferencePool"}}
    await crd_handler(running)(event={"type": "MODIFIED", "object": deleting})
    assert running.insights.watched_resources == {deployments}
    assert seen == ["MODIFIED"]
    record = cache.get(("serving", "llama"))
    assert record is None or not record.children


async def test_pool_and_child_events_reach_the_cache_on_the_event_loop() -> None:
    """kopf runs a plain-function handler in its thread pool; the cache and the work queue (an
    asyncio.Queue) are the event loop's alone: a trigger from another thread that raced a reconcile's
    end could be lost (a likely cause of a CI flake: a spec change whose reconcile never came)."""
    from kopf._core.actions.invocation import invoke

    threads: list[int] = []

    class Cache(ObjectCache):
        def observe_pool(self, event_type: str | None, body: dict[str, Any]) -> None:
            threads.append(threading.get_ident())

        def observe_child(self, event_type: str | None, body: dict[str, Any]) -> None:
            threads.append(threading.get_ident())

    running = build_kopf(Cache(WorkQueue(_nothing, workers=1)), None, lambda *_: _nothing(None))
    handlers = [h for h in running.registry._watching.get_all_handlers() if h.id != "crds"]
    assert len(handlers) > 1  # the pools' and each child kind's
    event = {"type": "MODIFIED", "object": {"metadata": {"name": "llama", "namespace": "serving"}}}
    for handler in handlers:
        await invoke(handler.fn, settings=running.settings, kwargs={"event": event})
    assert threads == [threading.get_ident()] * len(handlers)
