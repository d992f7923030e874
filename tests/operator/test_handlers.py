"""kopf's part of the operator: what it watches, and when it looks again at what the cluster serves."""

from __future__ import annotations

import asyncio
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
