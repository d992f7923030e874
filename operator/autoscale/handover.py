"""Handing an engine workload's replicas to an HPA or KEDA (``spec.autoscaling.mode External``, or
an HPA found on a Planner pool's workload) without them ever dropping. Pure.

Server-side apply removes a field that its manager applied before and applies no longer, when no
other manager holds it: leaving ``spec.replicas`` out of the operator's manifest alone would reset
a running Deployment to one replica. So another field manager (``HANDOVER_FIELD_MANAGER``) first
applies the current count, which it then shares with the operator, and the owner annotation
``external``; the operator's manifest then leaves both out, and the count stays, held by the
handover manager until the HPA's first write of the scale subresource takes it over (the
Kubernetes documentation's "Transferring ownership" recipe, docs/reference/using-api/server-side-apply).
Going back, the operator's own apply takes both the count and the annotation (``operator``)
back, forcing.
"""

from __future__ import annotations

from typing import Any

from tandem.operator.naming import REPLICAS_BY_EXTERNAL, REPLICAS_OWNER_ANNOTATION

Body = dict[str, Any]


def handed_over(live: Body) -> bool:
    """Whether the workload's replicas are already left to an HPA or KEDA."""
    annotations = live.get("metadata", {}).get("annotations") or {}
    return annotations.get(REPLICAS_OWNER_ANNOTATION) == REPLICAS_BY_EXTERNAL


def live_replicas(live: Body) -> int:
    return int((live.get("spec") or {}).get("replicas", 1))


def handover_manifest(live: Body, replicas: int) -> Body:
    """What the handover field manager applies to the workload ``live``: ``replicas`` and the
    owner annotation, nothing else."""
    meta = live["metadata"]
    return {
        "apiVersion": live["apiVersion"],
        "kind": live["kind"],
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "annotations": {REPLICAS_OWNER_ANNOTATION: REPLICAS_BY_EXTERNAL},
        },
        "spec": {"replicas": replicas},
    }
