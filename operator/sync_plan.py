"""What one reconcile does to a pool's children: which to apply in which wave, which to prune. Pure.

``plan_sync(live, desired, ...)`` compares the children the cache holds with the stamped desired
ones (``drift.needed_change`` per child) and orders the applies in waves; the reconciler sends each
wave at once, the next only once the one before succeeded, then prunes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from tandem.operator.drift import Change, needed_change
from tandem.operator.naming import SHARED_ROUTER_LABEL

Body = dict[str, Any]
ChildKey = tuple[str, str]  # kind, name

# Apply order: waves of kinds, each applied at once after the one before; other kinds go first.
# What others refer to comes before them: the API server refuses a RoleBinding whose Role it cannot
# read yet (404; its escalation check reads the Role's rules: kubernetes
# pkg/registry/rbac/rolebinding/policybased/storage.go), and pods need their ServiceAccount and
# ConfigMaps. An order that raced them made every new pool show ApplyFailed for a second.
# The GIE InferencePool (spec.gatewayAPI) comes last: a Gateway routes to the pods it selects, and
# its failure (a CRD being removed) must not hold back the engines.
APPLY_WAVES = {"RoleBinding": 1, "Deployment": 2, "LeaderWorkerSet": 2, "InferencePool": 3}


def child_key(body: Body) -> ChildKey:
    return body["kind"], body["metadata"]["name"]


@dataclass(frozen=True)
class ChildApply:
    manifest: Body  # stamped (``drift.stamp``)
    change: Change

    @property
    def child(self) -> ChildKey:
        return child_key(self.manifest)


@dataclass(frozen=True)
class SyncPlan:
    waves: tuple[tuple[ChildApply, ...], ...]  # in order; only waves with something to apply
    prune: tuple[Body, ...]  # live children of the pool no longer desired, to delete
    desired: frozenset[ChildKey]  # the pool's children once the plan is carried out


def _owned_by(body: Body, uid: str) -> bool:
    """Whether ``uid`` is the controller owner of ``body``, or the only owner of a shared router's
    object (its other members left): only such children are pruned. A shared router's object that
    other pools own too stays; their applies drop this pool's reference."""
    meta = body["metadata"]
    references: list[dict[str, Any]] = meta.get("ownerReferences") or []
    if any(reference.get("uid") == uid and reference.get("controller") for reference in references):
        return True
    shared = SHARED_ROUTER_LABEL in (meta.get("labels") or {})
    return shared and [reference.get("uid") for reference in references] == [uid]


def plan_sync(
    live: Mapping[ChildKey, Body], desired: Sequence[Body], *, applied: Set[ChildKey], owner: str
) -> SyncPlan:
    """The applies and deletes that take the pool owned by ``owner`` (its uid) from ``live`` to
    ``desired`` (stamped manifests). ``applied``: the children this process applied before; one of
    them missing now was deleted by someone, and re-creating it is a repair ("restored")."""
    waves: dict[int, list[ChildApply]] = {}
    for manifest in desired:
        child = child_key(manifest)
        change = needed_change(live.get(child), manifest)
        if change is Change.CREATE and child in applied:
            change = Change.REPAIR
        if change is not None:
            waves.setdefault(APPLY_WAVES.get(child[0], 0), []).append(ChildApply(manifest, change))
    wanted = frozenset(child_key(manifest) for manifest in desired)
    return SyncPlan(
        waves=tuple(tuple(wave) for _, wave in sorted(waves.items())),
        prune=tuple(body for child, body in live.items() if child not in wanted and _owned_by(body, owner)),
        desired=wanted,
    )
