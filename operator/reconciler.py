"""One pool's reconcile: decide, carry out the sync plan through the API, write status and Events.

A reconcile decides what should exist (``decide``, reused while neither the spec nor the cluster's
capabilities changed), applies and prunes what ``plan_sync`` says, wave by wave, and writes status
and Events only when they change, so an idle pool costs no API writes. A pool that cannot be
deployed is a status, not a failure. A child the API server refuses is a status too
(``ApplyFailed``, with the server's message and when the next attempt comes); a transient failure
retries with backoff, and shows (``ApplyRetrying``) once it has lasted a few attempts. A child whose
kind the API server stopped serving (its CRD deleted: "404 page not found") is planned again
without that kind, once discovery or the CRD's event agrees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from opentelemetry.trace import NoOpTracer, Tracer
from pydantic import ValidationError

from tandem.api import InferencePoolStatus
from tandem.operator.autoscale.autoscaler import Autoscaler, autoscaling_condition, live_workload
from tandem.operator.autoscale.handover import handed_over, handover_manifest, live_replicas
from tandem.operator.capabilities import (
    AWAITED_GROUPS,
    Capabilities,
    capabilities_from,
    crd_change,
    still_listed,
)
from tandem.operator.decide import LWS_MISSING, Decision, Planner, decide
from tandem.operator.drift import stamp
from tandem.operator.events import ChildChanges, event_manifest, pool_events
from tandem.operator.gateway_api import gateway_conditions
from tandem.operator.kinds import discovered_versions, kind_of
from tandem.operator.kube import Body, KubeApi, KubeError
from tandem.operator.metrics import OperatorMetrics
from tandem.operator.naming import HANDOVER_FIELD_MANAGER, PoolRef, Role
from tandem.operator.object_cache import Decided, ObjectCache, PoolKey, PoolRecord
from tandem.operator.settings import OperatorSettings
from tandem.operator.status import Problem, WorkloadState, pool_status, workload_state
from tandem.operator.sync_plan import ChildApply, ChildKey, SyncPlan, child_key, plan_sync

logger = logging.getLogger(__name__)

APPLY_FAILED = "ApplyFailed"  # the API server refused a child: it fails again until something changes
APPLY_RETRYING = "ApplyRetrying"  # transient failures that outlasted QUIET_TRANSIENT_FAILURES
# Transient failures in a row that stay out of the status: a conflict or a throttled request
# usually heals on the next attempt, and a status that flaps to a failure teaches users to ignore it.
QUIET_TRANSIENT_FAILURES = 2
# How stale the cluster's capabilities may be before a pool waiting for one looks again; and how
# long a CRD turning Established is awaited in discovery, looking every DISCOVERY_POLL_SECONDS.
REDISCOVER_SECONDS = 30.0
DISCOVERY_POLL_SECONDS = 0.5
# And then a moment more before it is used: requests for a CRD just Established may still answer
# "404 page not found" (the API server itself holds creates of its objects for 2 s: "We've observed
# about 800ms delay in some CI environments", apiextensions-apiserver customresource_handler.go).
# A kind that answers so is looked for in discovery that long too before its 404 counts as transient.
ESTABLISHED_SETTLE_SECONDS = 2.0


class ApplyError(Exception):
    """Children the API server did not take, each with its error."""

    def __init__(self, failed: list[tuple[ChildKey, KubeError]]) -> None:
        self.failed = failed
        super().__init__("; ".join(f"{kind}/{name}: {error}" for (kind, name), error in failed))

    @property
    def transient(self) -> bool:
        return all(error.transient for _, error in self.failed)

    def unserved(self, caps: Capabilities) -> frozenset[str]:
        """The discovered API versions, as ``caps`` render them, of the children the API server
        answered "404 page not found" (their kind not served)."""
        rendered = discovered_versions(caps)
        return frozenset(
            version
            for (kind, _), error in self.failed
            if error.not_served and (version := rendered.get(kind)) is not None
        )

    def problem(self, attempt: int, retry_in: float) -> Problem:
        """The status of a pool whose ``attempt``-th apply in a row failed, retried in ``retry_in`` s."""
        children: dict[tuple[str, str], list[str]] = {}  # one line per distinct answer
        for (kind, name), error in self.failed:
            children.setdefault((error.message, error.answer), []).append(f"{kind}/{name}")
        causes = "; ".join(
            f"{', '.join(names)}: {message} ({answer})" for (message, answer), names in children.items()
        )
        if self.transient:
            return Problem(
                APPLY_RETRYING, f"{causes}; attempt {attempt}, next in {retry_in:g} s", planned=True
            )
        return Problem(
            APPLY_FAILED, f"the API server refused {causes}; next attempt in {retry_in:g} s", planned=True
        )


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recorded_status(body: Body) -> InferencePoolStatus | None:
    try:
        return InferencePoolStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return None  # written by someone else: replaced by the next write


def _label(child: ChildKey) -> str:
    return "/".join(child)


class Reconciler:
    def __init__(
        self,
        settings: OperatorSettings,
        planner: Planner,
        api: KubeApi,
        cache: ObjectCache,
        metrics: OperatorMetrics,
        autoscaler: Autoscaler,
        *,
        instance: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        tracer: Tracer | None = None,
    ) -> None:
        """``tracer``: a span per reconcile (docs/tracing.md); default none, the API's no-op."""
        self._settings = settings
        self._tracer = tracer or NoOpTracer()
        self._autoscaler = autoscaler
        self._planner = planner
        self._api = api
        self._cache = cache
        self._metrics = metrics
        self._instance = instance
        self._clock = clock
        self._sleep = sleep
        self.caps = Capabilities()
        self._discovered_at = float("-inf")

    async def discover(self) -> None:
        self.caps = capabilities_from(await self._served())
        self._discovered_at = self._clock()

    async def _served(self) -> list[str]:
        return [version for group in AWAITED_GROUPS for version in await self._api.served_versions(group)]

    async def crd_changed(self, event_type: str | None, crd: Body) -> bool:
        """Whether a CRD event changed the capabilities (a LeaderWorkerSet or GIE InferencePool CRD
        came, or is going). An Established CRD's versions are awaited in discovery, then given a
        moment to be routed, before they count, or before this returns where discovery did not list
        them at first (kopf then looks at them: operator/handlers.py); a CRD being deleted stops
        counting at once."""
        change = crd_change(event_type, crd)
        if change is None:
            return False
        deadline = self._clock() + REDISCOVER_SECONDS
        try:
            served = await self._served()
            listed = set(change.established) <= set(served)
            while not set(change.established) <= set(served) and self._clock() < deadline:
                await self._sleep(DISCOVERY_POLL_SECONDS)
                served = await self._served()
        except KubeError as exc:
            logger.warning("API discovery failed: %s", exc)
            return False
        caps = capabilities_from(served, change.withdrawn)
        if change.established and (caps != self.caps or not listed):
            await self._sleep(ESTABLISHED_SETTLE_SECONDS)
        if caps == self.caps:
            return False
        self.caps, self._discovered_at = caps, self._clock()
        return True

    async def reconcile(self, key: PoolKey, *, failures: int, retry_in: float) -> float | None:
        """Reconcile one pool; ``failures``: its runs in a row that failed, ``retry_in``: the delay
        before the retry if this one fails too. Returns when to look again though nothing changes
        (controller-runtime's ``RequeueAfter``), or None."""
        record = self._cache.get(key)
        if record is None or record.pool is None or record.pool["metadata"].get("deletionTimestamp"):
            return None  # owner references let the garbage collector remove the children
        started = time.perf_counter()
        namespace, name = key
        attributes: dict[str, str | int] = {
            "k8s.namespace.name": namespace,
            "tandem.pool": name,
            "tandem.failures": failures,
        }
        # The span records an exception that escapes it, and is an error then.
        with self._tracer.start_as_current_span("reconcile", attributes=attributes) as span:
            try:
                requeue_after = await self._reconcile(key, record, record.pool, failures, retry_in)
            except Exception as exc:
                self._metrics.reconciles.labels("error").inc()
                self._metrics.errors.labels(type(exc).__name__).inc()
                span.set_attribute("tandem.outcome", "error")
                raise
            else:
                self._metrics.reconciles.labels("ok").inc()
                span.set_attribute("tandem.outcome", "ok")
            finally:
                self._metrics.duration.observe(time.perf_counter() - started)
        return requeue_after

    async def _decide(self, record: PoolRecord, body: Body) -> Decided:
        decided = self._decided(record, body)
        problem = decided.decision.problem
        waiting = problem is not None and problem.reason == LWS_MISSING
        if waiting and self._clock() - self._discovered_at > REDISCOVER_SECONDS:
            await self.discover()
            decided = self._decided(record, body)
        return decided

    def _decided(self, record: PoolRecord, body: Body) -> Decided:
        """The decision for this spec, reused when neither the spec nor the cluster changed."""
        meta = body["metadata"]
        scaled = Autoscaler.scaling(record.autoscale)
        # The pools sharing its router: one joining, changing or leaving changes the router's objects.
        sharing = self._cache.sharing(body)
        members = tuple(
            (m["metadata"]["name"], m["metadata"].get("uid"), m["metadata"].get("generation"))
            for m in sharing
        )
        fingerprint = (meta.get("uid"), meta.get("generation"), self.caps, scaled, members)
        if record.decided is not None and record.decided.fingerprint == fingerprint:
            return record.decided
        settings = self._settings
        decision = decide(
            body,
            self.caps,
            settings.images,
            self._planner,
            settings.gpu_product_label,
            network_policy=settings.network_policy,
            scaled=scaled,
            sharing=sharing,
        )
        stamped = [stamp(manifest) for manifest in decision.objects or []]
        record.decided = decided = Decided(fingerprint, decision, stamped)
        return decided

    async def _reconcile(
        self, key: PoolKey, record: PoolRecord, body: Body, failures: int, retry_in: float
    ) -> float | None:
        previous = recorded_status(body)
        decided = await self._decide(record, body)
        # The autoscaler decides when its interval is due; new replicas make a new decision.
        record.autoscale = await self._autoscaler.step(
            record.autoscale, decided.decision, record.children, previous
        )
        decided, caps = self._decided(record, body), self.caps
        changes = ChildChanges()
        failure = await self._sync(record, decided, changes)
        if failure is not None and await self._withdrawn(failure, caps):
            decided = self._decided(record, body)  # without the kinds no longer served
            failure = await self._sync(record, decided, changes)
        decision = decided.decision
        problem = decision.problem
        if failure is not None:
            if failure.transient and failures < QUIET_TRANSIENT_FAILURES:
                raise failure
            problem = failure.problem(failures + 1, retry_in)
        condition = autoscaling_condition(decision.spec, record.autoscale)
        autoscaling = [condition] if condition is not None else []
        status = pool_status(
            generation=decision.generation,
            plan=decision.plan,
            desired=self._desired(record, decision) if problem is None else None,
            observed=self._observed(record, decision.pool),
            problem=problem,
            endpoint=decision.endpoint,
            shared_router=decision.pool.shared_router,
            previous=previous,
            now=utc_now(),
            reported=[*gateway_conditions(decision.gateway, record.children), *autoscaling],
            autoscaling=Autoscaler.status(record.autoscale, previous),
        )
        record.status = status
        await self._write_status(key, record, body, status)
        await self._post_events(key, body, previous, status, changes)
        if failure is not None:
            raise failure  # retried with backoff: a fix outside the spec (RBAC, quota) makes no event
        later = [self._autoscaler.due_in(record.autoscale)]
        if problem is not None and problem.reason == LWS_MISSING:
            # Installing a CRD makes no event on the pool: look again once discovery may differ.
            later.append(REDISCOVER_SECONDS)
        return min((delay for delay in later if delay is not None), default=None)

    def _desired(self, record: PoolRecord, decision: Decision) -> dict[str, int] | None:
        """Replicas per component; where an HPA or KEDA sets them, what the live workload asks."""
        if decision.desired is None or decision.layout is None:
            return decision.desired
        desired = dict(decision.desired)
        for role in Role:
            live = live_workload(record.children, decision.pool, role)
            if decision.layout.role(role).external_replicas and live is not None:
                desired[role.value] = workload_state(live).desired
        return desired

    async def _hand_over(self, record: PoolRecord, decision: Decision, *, created: bool) -> None:
        """Give the replicas of each workload an HPA or KEDA is to scale to the handover field
        manager (``autoscale.handover``): before the operator's apply leaves them out (the count
        that runs), or right after that apply created the workload (the planned count)."""
        assert decision.layout is not None
        for role in Role:
            layout = decision.layout.role(role)
            live = live_workload(record.children, decision.pool, role)
            if not layout.external_replicas or live is None or handed_over(live):
                continue
            manifest = handover_manifest(live, layout.replicas if created else live_replicas(live))
            try:
                record.wrote_child(await self._api.apply(manifest, field_manager=HANDOVER_FIELD_MANAGER))
            except KubeError as exc:
                raise ApplyError([(child_key(manifest), exc)]) from exc
            self._metrics.writes.labels("apply", manifest["kind"]).inc()

    async def _sync(self, record: PoolRecord, decided: Decided, changes: ChildChanges) -> ApplyError | None:
        """Carry out the decision's sync plan, if it is deployable; the failure, if any."""
        decision = decided.decision
        if decision.objects is None:
            return None
        plan = plan_sync(record.children, decided.stamped, applied=record.applied, owner=decision.pool.uid)
        try:
            await self._carry_out(record, decision, plan, changes)
        except ApplyError as exc:
            return exc
        return None

    async def _withdrawn(self, failure: ApplyError, caps: Capabilities) -> bool:
        """Whether kinds the API server answered "404 page not found" for (as ``caps`` rendered
        them) are gone from the capabilities: a CRD deleted deletes its objects, whose events may
        come before the CRD's, so the pool applied them again. Gone once the CRD's event withdrew
        them meanwhile, or once discovery stops listing them (it follows the API server's routing
        with a lag: looked at every DISCOVERY_POLL_SECONDS for ESTABLISHED_SETTLE_SECONDS); then
        every pool is looked at again. Still listed, they are a CRD just Established and not
        routed yet: the failure stays transient."""
        versions = failure.unserved(caps)
        deadline = self._clock() + ESTABLISHED_SETTLE_SECONDS
        while versions & self.caps.versions:
            try:
                listed = still_listed(self.caps, await self._served())
            except KubeError as exc:
                logger.warning("API discovery failed: %s", exc)
                return False
            if not versions & listed.versions:
                logger.info("%s no longer served: planned without", ", ".join(sorted(versions)))
                self.caps = listed
                self._cache.queue_pools()
                return True
            if self._clock() >= deadline:
                return False
            await self._sleep(DISCOVERY_POLL_SECONDS)
        return bool(versions)

    async def _carry_out(
        self, record: PoolRecord, decision: Decision, plan: SyncPlan, changes: ChildChanges
    ) -> None:
        """Hand replicas over where needed, apply the plan's waves in order, then prune; ``changes``
        records what was done even when a wave fails (``ApplyError``, naming every child of the
        wave that failed)."""

        async def apply(item: ChildApply) -> None:
            record.wrote_child(await self._api.apply(item.manifest))
            self._metrics.writes.labels("apply", item.child[0]).inc()
            changes.add(item.change, _label(item.child))

        await self._hand_over(record, decision, created=False)
        for wave in plan.waves:
            results = await asyncio.gather(*(apply(item) for item in wave), return_exceptions=True)
            failed = []
            for item, result in zip(wave, results, strict=True):
                if isinstance(result, KubeError):
                    failed.append((item.child, result))
                elif isinstance(result, BaseException):
                    raise result
            if failed:
                raise ApplyError(failed)
        await self._hand_over(record, decision, created=True)
        record.applied = plan.desired
        for body in plan.prune:
            child, meta = child_key(body), body["metadata"]
            try:
                await self._api.delete(kind_of(body), meta["namespace"], meta["name"], meta["uid"])
            except KubeError as exc:
                raise ApplyError([(child, exc)]) from exc
            self._metrics.writes.labels("delete", child[0]).inc()
            record.children.pop(child, None)
            changes.pruned.append(_label(child))

    def _observed(self, record: PoolRecord, pool: PoolRef) -> dict[str, WorkloadState]:
        names = {role.value: pool.role_workload(role) for role in Role} | {"router": pool.router}
        observed = {}
        for component, name in names.items():
            body = record.children.get(("Deployment", name)) or record.children.get(("LeaderWorkerSet", name))
            if body is not None:
                observed[component] = workload_state(body)
        return observed

    async def _write_status(
        self, key: PoolKey, record: PoolRecord, body: Body, status: InferencePoolStatus
    ) -> None:
        wire = status.to_wire()
        if body.get("status") == wire:
            return
        namespace, name = key
        record.wrote_pool(await self._api.write_pool_status(namespace, name, wire))
        self._metrics.writes.labels("patch", "InferencePool/status").inc()

    async def _post_events(
        self,
        key: PoolKey,
        body: Body,
        previous: InferencePoolStatus | None,
        status: InferencePoolStatus,
        changes: ChildChanges,
    ) -> None:
        now = utc_now()
        for event in pool_events(previous, status, changes):
            try:
                await self._api.create_event(event_manifest(body, event, now=now, instance=self._instance))
            except KubeError as exc:  # Events are informative; losing one must not fail the reconcile
                logger.warning("could not post event %s on %s: %s", event.reason, key, exc)
            else:
                self._metrics.writes.labels("create", "Event").inc()
