"""What the watches reported, one record per pool: client-go's informer cache, in the operator's words.

Watch events land here (``observe_pool``, ``observe_child``), and so does a LIST of every child kind
before the first reconcile (``prime``), so a restarted operator sees what exists. An event queues its
pool for a reconcile unless it only echoes what the cache already holds (the resourceVersion
recorded from the operator's own write). Records keep no managedFields (large, and unused here).

A shared router's objects (``spec.router.shared``) carry no pool label: they are a child of each
pool their owner references name. A pool that joins, changes or leaves a shared router queues the
other members too, whose router objects change with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tandem.api import KIND, InferencePoolStatus
from tandem.operator.autoscale.autoscaler import PoolAutoscale
from tandem.operator.decide import Decision
from tandem.operator.kinds import Kind
from tandem.operator.kube import Body, KubeApi
from tandem.operator.naming import MANAGED_BY, MANAGED_BY_LABEL, POOL_LABEL, SHARED_ROUTER_LABEL
from tandem.operator.shared_router import shared_router_name
from tandem.operator.sync_plan import ChildKey, child_key
from tandem.operator.workqueue import WorkQueue

PoolKey = tuple[str, str]  # namespace, name


@dataclass(frozen=True)
class Decided:
    """A decision with its children stamped for apply, and what it was decided from."""

    fingerprint: tuple[object, ...]
    decision: Decision
    stamped: list[Body]


@dataclass(eq=False)
class PoolRecord:
    """All the operator holds about one pool."""

    pool: Body | None = None  # None: its children are seen, the pool is not (yet, or any more)
    children: dict[ChildKey, Body] = field(default_factory=dict)
    applied: frozenset[ChildKey] = frozenset()  # what this process applied: one missing was deleted
    decided: Decided | None = None  # the last decision, reused while neither spec nor cluster changes
    status: InferencePoolStatus | None = None  # the last status computed
    autoscale: PoolAutoscale | None = None  # the autoscaler's memory (spec.autoscaling.mode Planner)

    # What the operator wrote, as the API server returned it: its watch event will be an echo.

    def wrote_child(self, body: Body) -> None:
        self.children[child_key(body)] = _recorded(body)

    def wrote_pool(self, body: Body) -> None:
        if self.pool is not None:  # deleted while the write was under way: it stays deleted
            self.pool = _recorded(body)


def pool_key(body: Body) -> PoolKey:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def _same_version(recorded: Body | None, body: Body) -> bool:
    version = body["metadata"].get("resourceVersion")
    return (
        recorded is not None
        and version is not None
        and recorded["metadata"].get("resourceVersion") == version
    )


def _recorded(body: Body) -> Body:
    meta = body.get("metadata", {})
    if "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


class ObjectCache:
    def __init__(self, queue: WorkQueue[PoolKey]) -> None:
        self._queue = queue
        self._records: dict[PoolKey, PoolRecord] = {}

    def get(self, key: PoolKey) -> PoolRecord | None:
        return self._records.get(key)

    def pools(self) -> list[PoolKey]:
        """The pools seen (and not deleted)."""
        return [key for key, record in self._records.items() if record.pool is not None]

    def queue_pools(self) -> None:
        """Queue every pool seen: what the cluster serves changed, and with it what they render."""
        for key in self.pools():
            self._queue.add(key)

    def sharing(self, body: Body) -> list[Body]:
        """The pools of ``body``'s namespace (itself included) that name its shared router, by name."""
        name = shared_router_name(body)
        if name is None:
            return []
        namespace = body["metadata"]["namespace"]
        return [
            record.pool
            for (space, _), record in sorted(self._records.items())
            if space == namespace and record.pool is not None and shared_router_name(record.pool) == name
        ]

    def _queue_sharing(self, namespace: str, names: set[str | None], but: PoolKey) -> None:
        """Queue the other pools of ``namespace`` that share one of the routers ``names``."""
        for key, record in self._records.items():
            pool = record.pool
            if key != but and key[0] == namespace and pool is not None and shared_router_name(pool) in names:
                self._queue.add(key)

    def statuses(self) -> list[InferencePoolStatus]:
        return [r.status for r in self._records.values() if r.pool is not None and r.status is not None]

    # -- what the watches report -------------------------------------------------------------------

    def observe_pool(self, event_type: str | None, body: Body) -> None:
        key = pool_key(body)
        record = self._records.get(key)
        before = shared_router_name(record.pool) if record is not None and record.pool is not None else None
        if event_type == "DELETED":
            self._queue.forget(key)
            self._queue_sharing(key[0], {before, shared_router_name(body)} - {None}, but=key)
            if record is not None:
                record.pool, record.applied, record.decided, record.status = None, frozenset(), None, None
                record.autoscale = None
                self._drop_if_empty(key, record)
            return
        if record is None:
            record = self._records[key] = PoolRecord()
        elif _same_version(record.pool, body):
            return  # what the operator itself wrote, already recorded
        record.pool = _recorded(body)
        self._queue.add(key)
        self._queue_sharing(key[0], {before, shared_router_name(body)} - {None}, but=key)

    def observe_child(self, event_type: str | None, body: Body) -> None:
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        pool = labels.get(POOL_LABEL)
        if pool:
            self._observe_child_of((meta["namespace"], pool), event_type, body)
        elif labels.get(SHARED_ROUTER_LABEL):
            self._observe_shared(event_type, body)

    def _observe_shared(self, event_type: str | None, body: Body) -> None:
        """A shared router's object: a child of each pool that owns it, and of no other."""
        meta = body["metadata"]
        owners = {
            (meta["namespace"], reference["name"])
            for reference in meta.get("ownerReferences") or []
            if reference.get("kind") == KIND
        }
        child = child_key(body)
        for key in [k for k, r in self._records.items() if k not in owners and child in r.children]:
            self._observe_child_of(key, "DELETED", body)  # an owner no more
        for key in sorted(owners):
            self._observe_child_of(key, event_type, body)

    def _observe_child_of(self, key: PoolKey, event_type: str | None, body: Body) -> None:
        meta = body["metadata"]
        record = self._records.get(key)
        child = child_key(body)
        if event_type == "DELETED":
            if record is None:
                return
            # A late event for an object already replaced must not drop its successor.
            if record.children.get(child, {}).get("metadata", {}).get("uid") == meta.get("uid"):
                del record.children[child]
            self._drop_if_empty(key, record)
        else:
            if record is None:
                record = self._records[key] = PoolRecord()
            elif _same_version(record.children.get(child), body):
                return  # the echo of the operator's own apply, already recorded
            record.children[child] = _recorded(body)
        if record.pool is not None:
            self._queue.add(key)

    def forget_kind(self, group: str, kind: str) -> None:
        """Children of a kind no longer watched (its CRD is going: operator/handlers.py) count as
        deleted, as their watch would have said."""
        for key, record in list(self._records.items()):
            for body in [
                b
                for b in record.children.values()
                if b.get("kind") == kind and str(b.get("apiVersion", "")).partition("/")[0] == group
            ]:
                self._observe_child_of(key, "DELETED", body)

    async def prime(self, api: KubeApi, kinds: Iterable[Kind], namespaces: tuple[str, ...]) -> None:
        """Record the existing children before the first reconcile, so none looks missing."""
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        for kind in kinds:
            for body in await api.list_objects(kind, namespaces, selector):
                self.observe_child(None, body)

    def _drop_if_empty(self, key: PoolKey, record: PoolRecord) -> None:
        if record.pool is None and not record.children:
            del self._records[key]
