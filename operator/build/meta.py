"""Object metadata shared by every child: name, namespace, labels, owner reference."""

from __future__ import annotations

from typing import Any

from tandem.api import API_VERSION, KIND
from tandem.operator.naming import PoolRef

Manifest = dict[str, Any]


def metadata(pool: PoolRef, name: str, labels: dict[str, str]) -> Manifest:
    """Metadata of a child the pool owns: deleting the pool garbage-collects it."""
    return {
        "name": name,
        "namespace": pool.namespace,
        "labels": dict(labels),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": pool.name,
                "uid": pool.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def manifest(api_version: str, kind: str, meta: Manifest, **body: Any) -> Manifest:
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}
