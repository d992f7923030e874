"""The operator's shell: keeps what the watches report, and reconciles pools through a work queue.

Watches (kopf handlers) only record objects and queue their pool. A reconcile loads the pool,
decides what should exist (``decide``), applies what differs from the recorded children, prunes
what is no longer wanted, and writes status and Events only when they change, so an idle pool
costs no API writes. Transient API failures retry with backoff; a pool that cannot be deployed
is a status, not a failure.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tandem.api import InferencePoolStatus
from tandem.operator.capabilities import DISCOVERED_GROUPS, Capabilities, capabilities_from
from tandem.operator.decide import LWS_MISSING, Decision, Planner, decide
from tandem.operator.drift import Change, needed_change, stamp
from tandem.operator.events import ChildChanges, event_manifest, pool_events
from tandem.operator.kinds import kind_list_paths, kind_of, served_kinds
from tandem.operator.kube import Body, KubeClient, KubeError
from tandem.operator.metrics import OperatorMetrics
from tandem.operator.naming import MANAGED_BY, MANAGED_BY_LABEL, POOL_LABEL, Role
from tandem.operator.settings import OperatorSettings
from tandem.operator.status import Problem, WorkloadState, pool_status, workload_state
from tandem.operator.workqueue import WorkQueue

logger = logging.getLogger(__name__)

PoolKey = tuple[str, str]  # namespace, name
ChildKey = tuple[str, str]  # kind, name
APPLY_FAILED = "ApplyFailed"
WORKLOAD_KINDS = frozenset({"Deployment", "LeaderWorkerSet"})
# How stale the cluster's capabilities may be before a pool waiting for one looks again.
REDISCOVER_SECONDS = 30.0


@dataclass(frozen=True)
class Decided:
    """A decision with its children stamped for apply, and what it was decided from."""

    fingerprint: tuple[object, ...]
    decision: Decision
    stamped: list[Body]


def _same_version(recorded: Body | None, body: Body) -> bool:
    version = body["metadata"].get("resourceVersion")
    return (
        recorded is not None
        and version is not None
        and recorded["metadata"].get("resourceVersion") == version
    )


def _recorded(body: Body) -> Body:
    """What the cache keeps of an object: all but managedFields, which are large and unused here."""
    meta = body.get("metadata", {})
    if "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(body: Body) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def recorded_status(body: Body) -> InferencePoolStatus | None:
    try:
        return InferencePoolStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return None  # written by someone else: replaced by the next write


class Controller:
    def __init__(self, settings: OperatorSettings, planner: Planner, *, instance: str | None = None) -> None:
        self.settings = settings
        self._planner = planner
        self._instance = instance or socket.gethostname()
        self.pools: dict[PoolKey, Body] = {}
        self.children: dict[PoolKey, dict[ChildKey, Body]] = {}
        self.statuses: dict[PoolKey, InferencePoolStatus] = {}
        # Children this process applied per pool: a missing one was deleted, so it is "restored".
        self._applied: dict[PoolKey, set[ChildKey]] = {}
        self._decisions: dict[PoolKey, Decided] = {}
        self.caps = Capabilities()
        self._discovered_at = float("-inf")
        self._api: KubeClient | None = None
        self._resync: asyncio.Task[None] | None = None
        self.queue: WorkQueue[PoolKey] = WorkQueue(self.reconcile, workers=settings.workers)
        self.metrics = OperatorMetrics(
            statuses=lambda: list(self.statuses.values()), queue_depth=lambda: len(self.queue)
        )

    @property
    def api(self) -> KubeClient:
        if self._api is None:
            raise RuntimeError("the controller is not started")
        return self._api

    # -- what the watches report -------------------------------------------------------------------

    def observe_pool(self, event_type: str | None, body: Body) -> None:
        key = _key(body)
        if event_type == "DELETED":
            for table in (self.pools, self.statuses, self._applied, self._decisions):
                table.pop(key, None)
            self.queue.forget(key)
            return
        if _same_version(self.pools.get(key), body):
            return  # what the operator itself wrote, already recorded
        self.pools[key] = _recorded(body)
        self.queue.add(key)

    def observe_child(self, event_type: str | None, body: Body) -> None:
        meta = body["metadata"]
        pool = (meta.get("labels") or {}).get(POOL_LABEL)
        if not pool:
            return
        key = (meta["namespace"], pool)
        child = (body["kind"], meta["name"])
        children = self.children.setdefault(key, {})
        if event_type == "DELETED":
            # A late event for an object already replaced must not drop its successor.
            if children.get(child, {}).get("metadata", {}).get("uid") == meta.get("uid"):
                children.pop(child)
            if not children:
                del self.children[key]
        else:
            if _same_version(children.get(child), body):
                return  # the echo of the operator's own apply, already recorded
            children[child] = _recorded(body)
        if key in self.pools:
            self.queue.add(key)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, api: KubeClient) -> None:
        self._api = api
        await self.discover()
        await self._prime()
        self.queue.start()
        self._resync = asyncio.create_task(self._resync_loop(), name="resync")

    async def stop(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            await asyncio.gather(self._resync, return_exceptions=True)
        await self.queue.stop()

    async def discover(self) -> None:
        served = [version for group in DISCOVERED_GROUPS for version in await self.api.served_versions(group)]
        self.caps = capabilities_from(served)
        self._discovered_at = time.monotonic()

    async def _prime(self) -> None:
        """Record the existing children before the first reconcile, so none looks missing."""
        query = {"labelSelector": f"{MANAGED_BY_LABEL}={MANAGED_BY}"}
        for kind in served_kinds(self.caps):
            for path in kind_list_paths(kind, self.settings.namespaces):
                listing = await self.api.request("GET", path, query=query)
                for item in listing.get("items", []):
                    self.observe_child(None, {"apiVersion": kind.api_version, "kind": kind.kind, **item})

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            try:
                await self.discover()
            except KubeError as exc:
                logger.warning("API discovery failed: %s", exc)
            for key in list(self.pools):
                self.queue.add(key)

    # -- reconcile ---------------------------------------------------------------------------------

    async def reconcile(self, key: PoolKey) -> None:
        body = self.pools.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return  # owner references let the garbage collector remove the children
        started = time.perf_counter()
        try:
            await self._reconcile(key, body)
        except Exception as exc:
            self.metrics.reconciles.labels("error").inc()
            self.metrics.errors.labels(type(exc).__name__).inc()
            raise
        else:
            self.metrics.reconciles.labels("ok").inc()
        finally:
            self.metrics.duration.observe(time.perf_counter() - started)

    async def _decide(self, key: PoolKey, body: Body) -> Decided:
        decided = self._decided(key, body)
        problem = decided.decision.problem
        waiting = problem is not None and problem.reason == LWS_MISSING
        if waiting and time.monotonic() - self._discovered_at > REDISCOVER_SECONDS:
            await self.discover()
            decided = self._decided(key, body)
        return decided

    def _decided(self, key: PoolKey, body: Body) -> Decided:
        """The decision for this spec, from cache when neither the spec nor the cluster changed."""
        meta = body["metadata"]
        fingerprint = (meta.get("uid"), meta.get("generation"), self.caps)
        cached = self._decisions.get(key)
        if cached is not None and cached.fingerprint == fingerprint:
            return cached
        decision = decide(body, self.caps, self.settings.images, self._planner)
        stamped = [stamp(manifest) for manifest in decision.objects or []]
        self._decisions[key] = decided = Decided(fingerprint, decision, stamped)
        return decided

    async def _reconcile(self, key: PoolKey, body: Body) -> None:
        decided = await self._decide(key, body)
        decision = decided.decision
        changes = ChildChanges()
        problem, failure = decision.problem, None
        if decision.objects is not None:
            try:
                changes = await self._sync_children(key, decision.pool.uid, decided.stamped)
            except KubeError as exc:
                if exc.transient:
                    raise
                failure = exc
                problem = Problem(APPLY_FAILED, exc.message, planned=True)
        previous = recorded_status(body)
        status = pool_status(
            generation=decision.generation,
            plan=decision.plan,
            desired=decision.desired if problem is None else None,
            observed=self._observed(key, decision),
            problem=problem,
            endpoint=decision.endpoint,
            previous=previous,
            now=utc_now(),
        )
        self.statuses[key] = status
        await self._write_status(key, body, status)
        await self._post_events(body, previous, status, changes)
        if failure is not None:
            raise failure  # retried with backoff: a fix outside the spec (RBAC, quota) makes no event
        if problem is not None and problem.reason == LWS_MISSING:
            # Installing a CRD makes no event on the pool: look again once discovery may differ.
            self.queue.add_after(key, REDISCOVER_SECONDS)

    async def _sync_children(self, key: PoolKey, uid: str, stamped_objects: list[Body]) -> ChildChanges:
        live = self.children.setdefault(key, {})
        applied_before = self._applied.get(key, set())
        changes = ChildChanges()
        pending: list[tuple[ChildKey, Body, Change]] = []
        for stamped in stamped_objects:
            child = (stamped["kind"], stamped["metadata"]["name"])
            change = needed_change(live.get(child), stamped)
            if change is Change.CREATE and child in applied_before:
                change = Change.REPAIR
            if change is not None:
                pending.append((child, stamped, change))

        async def apply(child: ChildKey, stamped: Body, change: Change) -> None:
            live[child] = _recorded(await self.api.apply(stamped))
            self.metrics.writes.labels("apply", child[0]).inc()
            changes.add(change, "/".join(child))

        # Two waves, each applied at once: what pods need (ServiceAccount, ConfigMaps, ...) first,
        # so the workloads' pods never wait on a missing object.
        for wave in (False, True):
            await asyncio.gather(
                *(apply(*item) for item in pending if (item[0][0] in WORKLOAD_KINDS) is wave)
            )
        self._applied[key] = wanted = {(o["kind"], o["metadata"]["name"]) for o in stamped_objects}
        for child, body in list(live.items()):
            if child in wanted or not _owned_by(body, uid):
                continue
            await self.api.delete(kind_of(body), key[0], child[1], body["metadata"]["uid"])
            self.metrics.writes.labels("delete", child[0]).inc()
            live.pop(child, None)
            changes.pruned.append("/".join(child))
        return changes

    def _observed(self, key: PoolKey, decision: Decision) -> dict[str, WorkloadState]:
        live = self.children.get(key, {})
        pool = decision.pool
        names = {role.value: pool.role_workload(role) for role in Role} | {"router": pool.router}
        observed = {}
        for component, name in names.items():
            body = live.get(("Deployment", name)) or live.get(("LeaderWorkerSet", name))
            if body is not None:
                observed[component] = workload_state(body)
        return observed

    async def _write_status(self, key: PoolKey, body: Body, status: InferencePoolStatus) -> None:
        wire = status.to_wire()
        if body.get("status") == wire:
            return
        namespace, name = key
        self.pools[key] = _recorded(await self.api.write_pool_status(namespace, name, wire))
        self.metrics.writes.labels("patch", "InferencePool/status").inc()

    async def _post_events(
        self,
        body: Body,
        previous: InferencePoolStatus | None,
        status: InferencePoolStatus,
        changes: ChildChanges,
    ) -> None:
        now = utc_now()
        for event in pool_events(previous, status, changes):
            try:
                await self.api.create_event(event_manifest(body, event, now=now, instance=self._instance))
            except KubeError as exc:  # Events are informative; losing one must not fail the reconcile
                logger.warning("could not post event %s on %s: %s", event.reason, _key(body), exc)
            else:
                self.metrics.writes.labels("create", "Event").inc()


def _owned_by(body: Body, uid: str) -> bool:
    references: list[dict[str, Any]] = body["metadata"].get("ownerReferences") or []
    return any(reference.get("uid") == uid and reference.get("controller") for reference in references)
