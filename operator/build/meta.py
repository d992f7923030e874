"""Object metadata shared by every child: name, namespace, labels, owner reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tandem.api import API_VERSION, KIND
from tandem.operator.naming import PoolRef

Manifest = dict[str, Any]


def owner_reference(pool: PoolRef, *, controller: bool) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": pool.name,
        "uid": pool.uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def metadata(pool: PoolRef, name: str, labels: dict[str, str]) -> Manifest:
    """Metadata of a child the pool owns: deleting the pool garbage-collects it."""
    return {
        "name": name,
        "namespace": pool.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner_reference(pool, controller=True)],
    }


def shared_metadata(owners: Sequence[PoolRef], name: str, labels: dict[str, str]) -> Manifest:
    """Metadata of a child several pools own, none as its controller: the garbage collector removes
    it once the last of them is gone, and drops the reference of each one before."""
    return {
        "name": name,
        "namespace": owners[0].namespace,
        "labels": dict(labels),
        "ownerReferences": [owner_reference(pool, controller=False) for pool in owners],
    }


def manifest(api_version: str, kind: str, meta: Manifest, **body: Any) -> Manifest:
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}
