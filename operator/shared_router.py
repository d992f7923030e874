"""Which pools share a router (``spec.router.shared``) and the router they render alike. Pure.

The pools of one namespace that give the same ``spec.router.shared`` are its members. Each member
renders the router's objects from the same members, so every member's reconcile applies the same
ones. The router's Deployment and Service follow the first member by name; a member whose
``SHARED_FIELDS`` differ from that one's is refused (``SharedRouterConflict``, naming the fields)
and the router does not serve it. The policies the router applies per pool (balance, admission,
queue, timeouts, SLO, threshold) stay each pool's own: the router reads them from each pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from tandem.api import InferencePoolSpec
from tandem.api.spec import RouterSpec
from tandem.operator.build import SharedRouter
from tandem.operator.build.connectors import KV_PROFILES
from tandem.operator.naming import PoolRef, pool_name_problem
from tandem.operator.status import Problem
from tandem.operator.validate import spec_problems

SHARED_ROUTER_CONFLICT = "SharedRouterConflict"
# spec.router fields of the one Deployment and Service: members agree on them.
SHARED_FIELDS = ("replicas", "image", "service", "api_key_secret", "debug")
_WIRE = ", ".join(RouterSpec.model_fields[name].alias or name for name in SHARED_FIELDS)


def shared_router_name(body: Mapping[str, Any]) -> str | None:
    """``spec.router.shared`` of a pool as it is stored (valid or not), or None."""
    router = (body.get("spec") or {}).get("router") or {}
    name = router.get("shared") if isinstance(router, Mapping) else None
    return name if isinstance(name, str) and name else None


def _member(body: Mapping[str, Any]) -> tuple[PoolRef, InferencePoolSpec] | None:
    """A pool that may be a member: not being deleted, its name and spec valid (an invalid one
    says so in its own status)."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp") or pool_name_problem(meta["name"]) is not None:
        return None
    try:
        spec = InferencePoolSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None
    if spec_problems(spec) or spec.router.shared is None:
        return None
    ref = PoolRef(meta["name"], meta["namespace"], meta["uid"], shared_router=spec.router.shared)
    return ref, spec


def _differing(spec: InferencePoolSpec, first: InferencePoolSpec) -> list[str]:
    return [
        RouterSpec.model_fields[name].alias or name
        for name in SHARED_FIELDS
        if getattr(spec.router, name) != getattr(first.router, name)
    ]


def shared_router(
    pool: PoolRef, spec: InferencePoolSpec, pools: Iterable[Mapping[str, Any]]
) -> SharedRouter | Problem:
    """The router ``pool`` shares (``pool.shared_router``), its members found among ``pools`` (the
    stored pools of the namespace; ``pool`` itself counts whether it is among them or not); or why
    ``pool`` cannot be one of them."""
    name = pool.shared_router
    assert name is not None, "a pool that shares a router"
    found = {ref.name: (ref, own) for ref, own in filter(None, map(_member, pools))}
    candidates = {
        key: value
        for key, value in found.items()
        if value[0].namespace == pool.namespace and value[0].shared_router == name
    }
    candidates[pool.name] = (pool, spec)
    ordered = [candidates[key] for key in sorted(candidates)]
    first, first_spec = ordered[0]
    differing = _differing(spec, first_spec)
    if differing:
        fields = ", ".join(f"spec.router.{field}" for field in differing)
        return Problem(
            SHARED_ROUTER_CONFLICT,
            f"{fields}: differ from pool {first.name}'s, which shares router {name}; the pools that "
            f"share a router agree on spec.router.{{{_WIRE}}}",
        )
    agreeing = [(ref, own) for ref, own in ordered if not _differing(own, first_spec)]
    ports = (KV_PROFILES[own.disaggregation.connector].notify_port(own) for _, own in agreeing)
    notify_port = next((port for port in ports if port is not None), None)
    members = tuple(ref for ref, _ in agreeing)
    return SharedRouter(name=name, members=members, spec=first_spec, notify_port=notify_port)
