"""The autoscaler's shell: per pool (``spec.autoscaling.mode Planner``), every interval, read the
traffic, find HPAs on the engine workloads, and run the pure ``decide_scale``; between intervals,
tell the reconcile what replicas to render (``scaling``) and what to show (``status``).

The reconciler calls ``step`` on each reconcile of a pool: it decides only when the pool's
interval is due (the reconcile's requeue brings the pool back then, through the work queue), so
events in between cost no scrape. Its memory of a pool (``PoolAutoscale``) lives in the pool's
cache record; a restarted operator takes the correction and the last scale time back from the
pool's status, and waits a whole scale-down window before scaling down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tandem.api import AutoscalingMode, ConditionType, InferencePoolSpec, InferencePoolStatus, MetricsSource
from tandem.api.autoscaling import AutoscalingStatus, LayoutRecommendation, ReplicaCounts
from tandem.api.autoscaling import Correction as CorrectionStatus
from tandem.operator.autoscale.decision import (
    Correction,
    Recommendation,
    Replicas,
    ScaleHistory,
    ScaleInputs,
    ScalePolicy,
    Targets,
    decide_scale,
)
from tandem.operator.autoscale.observation import Observation, steady_observed
from tandem.operator.autoscale.replan import PoolPlans
from tandem.operator.autoscale.sources import (
    MetricsUnavailableError,
    Source,
    preferred_kind,
)
from tandem.operator.autoscale.window import Scrape
from tandem.operator.decide import Decision, Planner
from tandem.operator.kinds import Kind
from tandem.operator.kube import Body, KubeApi, KubeError
from tandem.operator.layout import Scaling
from tandem.operator.naming import PoolRef, Role
from tandem.operator.status import Reported, workload_state

logger = logging.getLogger(__name__)

HPA_VERSIONS = ("autoscaling/v2", "autoscaling/v2beta2")  # v2beta2: before 1.23
CONFLICT = "AutoscalingConflict"
METRICS_UNAVAILABLE = "MetricsUnavailable"
WORKLOAD_KINDS = ("Deployment", "LeaderWorkerSet")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass
class PoolAutoscale:
    """What the autoscaler holds about one pool."""

    history: ScaleHistory
    desired: Replicas  # what the reconcile renders for the roles the autoscaler sets
    due_at: float  # when the next decision is due (the autoscaler's clock)
    decided_at: float | None = None  # when the last one was made
    generation: int | None = None  # of the spec it was made for: a new one decides at once
    scrapes: list[Scrape] = field(default_factory=list)
    decision: str = "starting"
    observation: Observation | None = None
    unavailable: str | None = None
    unavailable_since: float | None = None
    recommendation: LayoutRecommendation | None = None
    hpas: dict[Role, str] = field(default_factory=dict)  # roles an HPA targets -> which
    pinned: dict[Role, int] = field(default_factory=dict)
    last_scale_time: str | None = None


def hpa_targets(hpas: list[Body], pool: PoolRef) -> dict[Role, str]:
    """The engine roles whose workload a HorizontalPodAutoscaler (KEDA makes them too) scales."""
    names = {pool.role_workload(role): role for role in Role}
    found: dict[Role, str] = {}
    for hpa in hpas:
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        role = names.get(target.get("name", ""))
        if role is not None and target.get("kind") in WORKLOAD_KINDS:
            name = hpa["metadata"]["name"]
            found[role] = f"HorizontalPodAutoscaler {name} scales {target['kind']} {target['name']}"
    return found


def live_workload(children: Mapping[tuple[str, str], Body], pool: PoolRef, role: Role) -> Body | None:
    name = pool.role_workload(role)
    return next((children[(kind, name)] for kind in WORKLOAD_KINDS if (kind, name) in children), None)


def _policy(spec: InferencePoolSpec, fixed: Mapping[Role, str]) -> ScalePolicy:
    scaling = spec.autoscaling
    return ScalePolicy(
        minimum=Replicas(scaling.min_replicas.prefill, scaling.min_replicas.decode),
        maximum=Replicas(scaling.max_replicas.prefill, scaling.max_replicas.decode),
        up_window_s=scaling.scale_up_seconds,
        down_window_s=scaling.scale_down_seconds,
        window_s=scaling.window_seconds,
        targets=Targets(ttft_ms=spec.slo.ttft_ms, itl_ms=spec.slo.itl_ms),
        declared=spec.workload,
        fixed=dict(fixed),
    )


def _pins(spec: InferencePoolSpec) -> dict[Role, int]:
    pins = {Role.PREFILL: spec.prefill.replicas, Role.DECODE: spec.decode.replicas}
    return {role: count for role, count in pins.items() if count is not None}


class Autoscaler:
    def __init__(
        self,
        api: KubeApi,
        planner: Planner,
        sources: Mapping[MetricsSource, Source],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._planner = planner
        self._sources = sources
        self._clock = clock
        self._wall = wall
        self._hpa_kind: Kind | None = None
        self._hpa_discovered = False  # a cluster that serves no HPA version is asked once

    # -- what the reconcile asks between decisions ----------------------------------------------

    @staticmethod
    def scaling(state: PoolAutoscale | None) -> Scaling:
        """The replicas to render: the autoscaler's for the roles it sets; HPA-scaled roles left out."""
        if state is None:
            return Scaling()
        external = frozenset(state.hpas)
        replicas = {
            role: state.desired.of(role) for role in Role if role not in external and role not in state.pinned
        }
        return Scaling(replicas=replicas, external=external)

    def due_in(self, state: PoolAutoscale | None) -> float | None:
        return None if state is None else max(0.0, state.due_at - self._clock())

    # -- one interval ------------------------------------------------------------------------------

    async def step(
        self,
        state: PoolAutoscale | None,
        decision: Decision,
        children: Mapping[tuple[str, str], Body],
        previous: InferencePoolStatus | None,
    ) -> PoolAutoscale | None:
        """The pool's autoscaler state after this reconcile (None: not autoscaled by the planner)."""
        spec = decision.spec
        if spec is None or spec.autoscaling.mode != AutoscalingMode.PLANNER:
            return None
        now = self._clock()
        if decision.layout is None:
            # Not deployable as it stands: what was learned waits for a fixed spec (a new
            # generation, decided at once); meanwhile the pool is not asked back any sooner.
            if state is not None:
                state.due_at = max(state.due_at, now + spec.autoscaling.interval_seconds)
            return state
        if state is None:
            state = self._start(decision, children, previous, now)
        if now < state.due_at and state.generation == decision.generation:
            return state
        state.generation = decision.generation
        scaling = spec.autoscaling
        state.decided_at, state.due_at = now, now + scaling.interval_seconds
        state.hpas = await self._hpas(decision.pool, state.hpas)
        state.pinned = _pins(spec)
        try:
            state.observation = await self._sources[scaling.metrics.source].observe(
                decision.pool, spec, state.scrapes, now
            )
            state.unavailable = state.unavailable_since = None
        except MetricsUnavailableError as exc:
            state.observation, state.unavailable = None, str(exc)
            router = children.get(("Deployment", decision.pool.router))
            if router is None or workload_state(router).ready == 0:
                # A new pool's routers still starting (an image pull may take minutes): no alarm yet.
                state.unavailable_since = None
            elif state.unavailable_since is None:
                state.unavailable_since = now
        fixed = {role: f"spec.{role}.replicas is pinned to {count}" for role, count in state.pinned.items()}
        fixed |= state.hpas
        current = self._current(state, decision, children)
        plans = PoolPlans(spec, self._planner(spec), decision.layout, self._planner)
        decided = decide_scale(
            ScaleInputs(
                now=now,
                observation=state.observation,
                current=current,
                settled=self._settled(decision, children, current),
                history=state.history,
                policy=_policy(spec, fixed),
                unavailable=state.unavailable,
            ),
            plans,
        )
        if decided.desired != current:
            state.last_scale_time = self._wall().strftime(TIME_FORMAT)
            logger.info("%s/%s: %s", decision.pool.namespace, decision.pool.name, decided.reason)
        state.history, state.desired = decided.history, decided.desired
        state.decision, state.recommendation = decided.reason, decided.recommendation
        return state

    def _start(
        self,
        decision: Decision,
        children: Mapping[tuple[str, str], Body],
        previous: InferencePoolStatus | None,
        now: float,
    ) -> PoolAutoscale:
        """What runs now (the live workloads', else the plan's replicas); the correction and last
        scale time from the status; a scale-down window of "no fewer than now"."""
        assert decision.layout is not None
        counts = {}
        for role in Role:
            live = live_workload(children, decision.pool, role)
            counts[role] = workload_state(live).desired if live else decision.layout.role(role).replicas
        current = Replicas(counts[Role.PREFILL], counts[Role.DECODE])
        before = previous.autoscaling if previous else None
        correction, last_scale_at = Correction(), None
        if before is not None and before.correction is not None:
            correction = Correction(before.correction.prefill, before.correction.decode)
        if before is not None and before.last_scale_time:
            try:
                scaled = datetime.strptime(before.last_scale_time, TIME_FORMAT).replace(tzinfo=UTC)
                last_scale_at = now - (self._wall() - scaled).total_seconds()
            except ValueError:
                pass
        history = ScaleHistory(
            recommendations=(Recommendation(now, current, current),),
            correction=correction,
            last_scale_at=last_scale_at,
        )
        return PoolAutoscale(
            history=history,
            desired=current,
            due_at=now,
            last_scale_time=before.last_scale_time if before else None,
        )

    @staticmethod
    def _current(
        state: PoolAutoscale, decision: Decision, children: Mapping[tuple[str, str], Body]
    ) -> Replicas:
        counts = {}
        for role in Role:
            live = live_workload(children, decision.pool, role)
            if role in state.pinned:
                counts[role] = state.pinned[role]
            elif role in state.hpas and live is not None:
                counts[role] = workload_state(live).desired
            else:
                counts[role] = state.desired.of(role)
        return Replicas(counts[Role.PREFILL], counts[Role.DECODE])

    @staticmethod
    def _settled(decision: Decision, children: Mapping[tuple[str, str], Body], current: Replicas) -> bool:
        for role in Role:
            live = live_workload(children, decision.pool, role)
            if live is None:
                if current.of(role):
                    return False
                continue
            state = workload_state(live)
            if not state.settled or state.desired != current.of(role):
                return False
        return True

    async def _hpas(self, pool: PoolRef, before: dict[Role, str]) -> dict[Role, str]:
        try:
            if not self._hpa_discovered:
                self._hpa_kind = await preferred_kind(
                    self._api, HPA_VERSIONS, "HorizontalPodAutoscaler", "horizontalpodautoscalers"
                )
                self._hpa_discovered = True
            if self._hpa_kind is None:
                return {}
            return hpa_targets(await self._api.list_objects(self._hpa_kind, (pool.namespace,), ""), pool)
        except KubeError as exc:
            self._hpa_discovered = False  # asked again next time
            logger.warning("could not list HorizontalPodAutoscalers in %s: %s", pool.namespace, exc)
            return before  # what was known: a failed read neither starts nor ends a handover

    # -- what the status shows ---------------------------------------------------------------------

    @staticmethod
    def status(state: PoolAutoscale | None, previous: InferencePoolStatus | None) -> AutoscalingStatus | None:
        if state is None:
            return None
        before = previous.autoscaling if previous else None
        observed = state.observation.to_status() if state.observation else None
        if observed is not None and before is not None:
            observed = steady_observed(before.observed, observed)
        correction = state.history.correction
        return AutoscalingStatus(
            observed=observed,
            desired=ReplicaCounts(prefill=state.desired.prefill, decode=state.desired.decode),
            correction=CorrectionStatus(
                prefill=round(correction.prefill, 2), decode=round(correction.decode, 2)
            ),
            last_scale_time=state.last_scale_time,
            last_decision=state.decision,
            recommendation=state.recommendation,
        )


def autoscaling_condition(spec: InferencePoolSpec | None, state: PoolAutoscale | None) -> Reported | None:
    """The ``Autoscaling`` condition: only for a mode other than Off. Metrics count as unavailable
    once a whole window with a ready router replica has gone without any."""
    if spec is None or spec.autoscaling.mode == AutoscalingMode.OFF:
        return None
    kind = ConditionType.AUTOSCALING
    if spec.autoscaling.mode == AutoscalingMode.EXTERNAL:
        message = "the engines' replicas are left to HorizontalPodAutoscalers or KEDA (set only at creation)"
        return Reported(kind, "True", "External", message)
    if state is None:
        return Reported(kind, "Unknown", "Starting", "no decision yet")
    conflicts = [
        f"spec.{role}.replicas is pinned: {role} stays at {count}; remove the pin to let the autoscaler "
        "scale it"
        for role, count in state.pinned.items()
    ] + [
        f"{target}: {role}'s replicas are left to it; set spec.autoscaling.mode External or delete it"
        for role, target in state.hpas.items()
    ]
    if conflicts:
        return Reported(kind, "False", CONFLICT, "; ".join(conflicts))
    scaling = spec.autoscaling
    if (
        state.unavailable is not None
        and state.unavailable_since is not None
        and state.decided_at is not None
        and state.decided_at - state.unavailable_since >= scaling.window_seconds
    ):
        return Reported(kind, "False", METRICS_UNAVAILABLE, state.unavailable)
    return Reported(
        kind,
        "True",
        "Planner",
        f"replicas follow the pool's traffic ({scaling.metrics.source} metrics): deciding every "
        f"{scaling.interval} over the last {scaling.window}",
    )
