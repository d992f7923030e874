"""An in-memory API server for the controller's unit tests.

``MemoryApi`` satisfies ``tandem.operator.kube.KubeApi`` as it is: ``make lint`` type-checks this
module and the tests that hand it to the controller, so the fake cannot drift from the protocol."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tandem.operator.kinds import Kind
from tandem.operator.kube import KubeError, NotFoundError
from tandem.operator.naming import FIELD_MANAGER, REPLICAS_OWNER_ANNOTATION

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "simulator-pool.yaml"

Refusal = Callable[[dict[str, Any]], KubeError | None]


class MemoryApi:
    """Children by (kind, name) in one namespace, pools by (namespace, name), a log of writes.

    Applies overlap as the API server's do (each is checked on arrival and lands a loop turn later),
    and a RoleBinding whose Role does not exist yet is refused as the API server refuses it: its
    RBAC escalation check reads the Role's rules and answers the lookup's 404 (kubernetes
    pkg/registry/rbac/rolebinding/policybased/storage.go). ``refuse`` may refuse more.

    Field ownership is modelled for what the autoscaler relies on: a workload's ``spec.replicas``
    and replicas-owner annotation, applied by another field manager, stay when the operator's
    apply leaves them out; left out with no other owner, the count falls back to the API server's
    default of 1 (tests/operator/test_replicas_handover_on_cluster.py checks this on a real one)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pools: dict[tuple[str, str], dict[str, Any]] = {}
        self.served = {"policy": ["policy/v1"]}  # API discovery: versions by group
        self.writes: list[tuple[str, str]] = []
        self.events: list[dict[str, Any]] = []
        self.versions = itertools.count(100)
        self.refuse: Refusal = lambda manifest: None
        self.held: dict[tuple[str, str], dict[str, Any]] = {}  # fields other managers applied, per object

    def store_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        """Keep a pool as a create or update would; tests then hand it to the cache, as a watch does."""
        meta = body["metadata"]
        self.pools[meta["namespace"], meta["name"]] = copy.deepcopy(body)
        return body

    async def served_versions(self, group: str) -> list[str]:
        return self.served.get(group, [])

    async def list_objects(
        self, kind: Kind, namespaces: tuple[str, ...], label_selector: str
    ) -> list[dict[str, Any]]:
        """Equality selectors only (``key=value,...``; empty: all), as the operator sends."""
        wanted = dict(term.split("=", 1) for term in label_selector.split(",") if term)
        return [
            copy.deepcopy(body)
            for body in self.objects.values()
            if (body["apiVersion"], body["kind"]) == (kind.api_version, kind.kind)
            and (not namespaces or body["metadata"]["namespace"] in namespaces)
            and wanted.items() <= (body["metadata"].get("labels") or {}).items()
        ]

    async def apply(self, manifest: dict[str, Any], *, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        role = manifest.get("roleRef", {}).get("name")
        if manifest["kind"] == "RoleBinding" and ("Role", role) not in self.objects:
            raise NotFoundError(404, f'roles.rbac.authorization.k8s.io "{role}" not found', reason="NotFound")
        refused = self.refuse(manifest)
        if refused is not None:
            raise refused
        await asyncio.sleep(0)
        key = (manifest["kind"], manifest["metadata"]["name"])
        previous = self.objects.get(key)
        if field_manager != FIELD_MANAGER:
            live = self._hold(key, manifest, previous)
        else:
            live = self._own(key, copy.deepcopy(manifest), previous)
        live["metadata"]["uid"] = previous["metadata"]["uid"] if previous else f"uid-{key[1]}-{key[0]}"
        live["metadata"]["resourceVersion"] = str(next(self.versions))
        self.objects[key] = live
        self.writes.append(("apply", "/".join(key)))
        return copy.deepcopy(live)

    def _hold(
        self, key: tuple[str, str], partial: dict[str, Any], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Another manager's apply of a workload's replicas and owner annotation."""
        if previous is None:
            raise KubeError(422, f"{key[0]} {key[1]}: spec.selector: Required value", reason="Invalid")
        live = copy.deepcopy(previous)
        live["spec"]["replicas"] = partial["spec"]["replicas"]
        annotations = partial["metadata"]["annotations"]
        live["metadata"].setdefault("annotations", {}).update(annotations)
        self.held[key] = {"replicas": partial["spec"]["replicas"], "annotations": dict(annotations)}
        return live

    def _own(
        self, key: tuple[str, str], live: dict[str, Any], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The operator's apply: what it sets it takes (forcing); what it leaves out stays where
        another manager holds it, and a count nobody holds is the default."""
        held = self.held.get(key)
        if held is None or previous is None:
            if live["kind"] == "Deployment":
                live["spec"].setdefault("replicas", 1)
            return live
        spec, annotations = live.setdefault("spec", {}), live["metadata"].setdefault("annotations", {})
        if "replicas" in spec or REPLICAS_OWNER_ANNOTATION in annotations:
            del self.held[key]  # forced back
            spec.setdefault("replicas", 1)
            return live
        spec["replicas"] = previous["spec"].get("replicas", held["replicas"])
        annotations.update(held["annotations"])
        return live

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str) -> None:
        self.objects.pop((kind.kind, name), None)
        self.writes.append(("delete", f"{kind.kind}/{name}"))

    async def write_pool_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        pool = self.pools.get((namespace, name))
        if pool is None:
            raise NotFoundError(404, f'inferencepools.tandem.dev "{name}" not found', reason="NotFound")
        pool["status"] = copy.deepcopy(status)
        pool["metadata"]["resourceVersion"] = str(next(self.versions))
        self.writes.append(("status", name))
        return copy.deepcopy(pool)

    async def create_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def pool_body(**spec: Any) -> dict[str, Any]:
    """The simulator example as the API server returns it, with top-level spec sections replaced."""
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"].update(namespace="serving", uid="pool-uid", generation=1, resourceVersion="1")
    body["spec"].update(spec)
    return body
