"""The autoscaler's decision: an observation, the current replicas and the history in, the desired
prefill and decode replicas and a one-line reason out. Pure (time comes in as ``now``; the planner
as a ``PlanView``).

Each interval:

1. **Correction.** Where the window's measured latency at the SLO's percentile is worse than what
   the plan predicts for the current replicas at the measured load (and the plan says those
   replicas should hold), a per-role factor learns measured ÷ predicted: prefill from TTFT, decode
   from ITL (an aggregated pool's one role from the worse of both). A miss raises it halfway
   towards the measured ratio; while the targets hold it only relaxes, by a fifth of the way
   towards the ratio (and 1 at least). It stays within ``MIN_CORRECTION``-``MAX_CORRECTION``, and
   is learned only on a settled pool whose window saw enough requests and no scaling.
2. **Need.** The planner sizes each role, on the pool's own layout, for the measured load times
   that role's correction: ``up`` replicas. ``down`` is the count that would still hold with
   ``DOWN_TOLERANCE`` to spare: scaling down needs that margin (hysteresis).
3. **Stabilization.** A role scales up to the fewest ``up`` of the scale-up window, and down to the
   most ``down`` of the scale-down window (HorizontalPodAutoscaler's rule), so a count is reached
   only once the load has needed it for that long: fast up, slow down, no flapping.
4. **Bounds.** min/max per role (an aggregated pool runs no prefill), a role the autoscaler must
   not touch keeps its replicas, and both roles together stay within the GPU budget.

No traffic in the window counts as a need of ``minReplicas``. No observation (metrics unreachable,
not a window yet) holds the replicas; an observation missing some router replicas may scale up,
never down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from tandem.api import TokenStats, WorkloadSpec
from tandem.api.autoscaling import MAX_CORRECTION, MIN_CORRECTION, LayoutRecommendation
from tandem.api.lengths import most_p90
from tandem.operator.autoscale.observation import Lengths, Observation
from tandem.operator.naming import Role
from tandem.planner import GpuBudget

# Spare capacity a scale-down must leave: fewer replicas only when they hold 1.1 x the load.
DOWN_TOLERANCE = 0.1
# How far the correction moves towards measured ÷ predicted per interval: on a miss, and while
# the targets hold.
LEARN_ON_MISS = 0.5
LEARN_ON_HOLD = 0.2
# Requests a window must have judged before its percentiles teach anything.
MIN_JUDGED_REQUESTS = 20
# Significant digits of the load the planner is asked about.
PLAN_DIGITS = 2


@dataclass(frozen=True)
class Replicas:
    prefill: int
    decode: int

    def of(self, role: Role) -> int:
        return self.prefill if role is Role.PREFILL else self.decode

    def with_role(self, role: Role, count: int) -> Replicas:
        return replace(self, **{role.value: count})

    def __str__(self) -> str:
        return f"prefill {self.prefill}, decode {self.decode}"


@dataclass(frozen=True)
class Correction:
    prefill: float = MIN_CORRECTION
    decode: float = MIN_CORRECTION

    def of(self, role: Role) -> float:
        return self.prefill if role is Role.PREFILL else self.decode

    def __str__(self) -> str:
        return f"prefill x{self.prefill:.2f}, decode x{self.decode:.2f}"


@dataclass(frozen=True)
class RoleNeed:
    replicas: int  # what the load needs on the pool's layout
    replica_rps: float  # what one replica sustains within the targets, per the plan


@dataclass(frozen=True)
class Sizing:
    prefill: RoleNeed | None  # None: the pool serves aggregated (no prefill role)
    decode: RoleNeed

    def of(self, role: Role) -> RoleNeed | None:
        return self.prefill if role is Role.PREFILL else self.decode


@dataclass(frozen=True)
class Prediction:
    """The plan's latencies at the SLO's percentile for some replicas and load."""

    ttft_ms: float | None
    itl_ms: float | None


class PlanView(Protocol):
    """What the decision asks of the planner, on the pool's own layout (its TP/PP per role)."""

    @property
    def disaggregated(self) -> bool: ...

    @property
    def gpus_per_replica(self) -> Replicas: ...

    @property
    def budget(self) -> GpuBudget | None: ...

    def size(self, load: WorkloadSpec) -> Sizing | str:
        """Replicas the load needs; a str says why the layout cannot serve it at all."""
        ...

    def predict(self, load: WorkloadSpec, replicas: Replicas) -> Prediction | None:
        """Latencies of these replicas under the load; None where the plan says they do not hold."""
        ...

    def recommend(self, load: WorkloadSpec) -> LayoutRecommendation | None:
        """A different layout the planner prefers for this load, or None."""
        ...


@dataclass(frozen=True)
class Targets:
    ttft_ms: float
    itl_ms: float


@dataclass(frozen=True)
class ScalePolicy:
    """``spec.autoscaling`` and the SLO, in seconds and counts."""

    minimum: Replicas
    maximum: Replicas
    up_window_s: float
    down_window_s: float
    window_s: float  # of the metrics: a window after a change still shows the replicas before it
    targets: Targets
    declared: WorkloadSpec  # the spec's workload: lengths where the window measured none
    fixed: Mapping[Role, str] = field(default_factory=dict)  # roles left alone, and why


@dataclass(frozen=True)
class Recommendation:
    """What one interval's load needed, per role."""

    at: float
    up: Replicas
    down: Replicas  # with the tolerance a scale-down needs; never below ``up``


@dataclass(frozen=True)
class ScaleHistory:
    recommendations: tuple[Recommendation, ...] = ()
    correction: Correction = field(default_factory=Correction)
    last_scale_at: float | None = None
    settled_since: float | None = None  # since when every replica has been ready


@dataclass(frozen=True)
class ScaleInputs:
    now: float
    observation: Observation | None
    current: Replicas  # what the operator asks for now
    settled: bool  # every role runs its current replicas, all ready
    history: ScaleHistory
    policy: ScalePolicy
    unavailable: str | None = None  # why there is no observation


@dataclass(frozen=True)
class ScaleDecision:
    desired: Replicas
    reason: str  # one line
    history: ScaleHistory
    recommendation: LayoutRecommendation | None = None

    @property
    def correction(self) -> Correction:
        return self.history.correction


def _sig(value: float) -> str:
    return f"{value:.3g}"


def rounded_up(value: float, digits: int = PLAN_DIGITS) -> float:
    """``value`` rounded up to ``digits`` significant digits (13.2 -> 14, 2034 -> 2100)."""
    if value <= 0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return round(math.ceil(value / scale - 1e-9) * scale, 9)


def _token_stats(measured: Lengths | None, declared: TokenStats) -> TokenStats:
    if measured is None:
        return declared
    mean = max(1, round(rounded_up(measured.mean)))
    # Traffic with a heavier tail than any log-normal is planned for the heaviest one (its p90 is
    # most_p90): the same tokens in all, the longest prompts a little shorter.
    p90 = min(max(mean, round(rounded_up(measured.p90))), most_p90(mean))
    return TokenStats(mean=mean, p90=p90)


def planner_load(observation: Observation, declared: WorkloadSpec, factor: float = 1.0) -> WorkloadSpec:
    """The planner's workload for what was observed, ``factor`` times its rate; lengths the window
    did not measure come from the declared workload. Rounded up to ``PLAN_DIGITS`` significant
    digits: a little more load than measured, and nearby loads make the same plan, which the
    planner's cache then answers."""
    return declared.model_copy(
        update={
            "requests_per_second": rounded_up(observation.requests_per_second * factor),
            "prompt_tokens": _token_stats(observation.prompt_tokens, declared.prompt_tokens),
            "output_tokens": _token_stats(observation.output_tokens, declared.output_tokens),
        }
    )


# -- 1. correction -------------------------------------------------------------------------------


def _bounded(value: float) -> float:
    return min(MAX_CORRECTION, max(MIN_CORRECTION, value))


def _learn(current: float, ratio: float, missed: bool) -> float:
    """One step of a role's correction (measured ÷ predicted = ``ratio``): a miss raises it
    halfway towards the ratio; while the target holds, it relaxes towards the ratio, never up."""
    if missed:
        return _bounded(max(current, current + LEARN_ON_MISS * (ratio - current)))
    return _bounded(current + LEARN_ON_HOLD * (min(current, max(MIN_CORRECTION, ratio)) - current))


def _ratio(measured: float | None, predicted: float | None, target: float) -> tuple[float, bool] | None:
    if measured is None or predicted is None or predicted <= 0:
        return None
    return measured / predicted, measured > target


def learn_correction(
    correction: Correction,
    observation: Observation,
    predicted: Prediction,
    targets: Targets,
    disaggregated: bool,
) -> Correction:
    """The correction after this window: prefill from TTFT, decode from ITL; aggregated serving's
    one role (decode) from whichever of the two is further off."""
    ttft = _ratio(observation.ttft_ms, predicted.ttft_ms, targets.ttft_ms)
    itl = _ratio(observation.itl_ms, predicted.itl_ms, targets.itl_ms)
    if disaggregated:
        return Correction(
            prefill=_learn(correction.prefill, *ttft) if ttft else correction.prefill,
            decode=_learn(correction.decode, *itl) if itl else correction.decode,
        )
    known = [r for r in (ttft, itl) if r is not None]
    if not known:
        return correction
    ratio = max(r for r, _ in known)
    return Correction(
        prefill=correction.prefill, decode=_learn(correction.decode, ratio, any(m for _, m in known))
    )


def _may_learn(inputs: ScaleInputs, settled_since: float | None) -> bool:
    """A window that only saw the current replicas, all ready, with enough requests to judge."""
    observation, history, window = inputs.observation, inputs.history, inputs.policy.window_s
    return (
        observation is not None
        and observation.complete
        and observation.judged >= MIN_JUDGED_REQUESTS
        and settled_since is not None
        and settled_since <= inputs.now - window
        and (history.last_scale_at is None or history.last_scale_at <= inputs.now - window)
    )


# -- 2. need -------------------------------------------------------------------------------------


def _needs(
    observation: Observation, policy: ScalePolicy, correction: Correction, plan: PlanView
) -> tuple[Replicas, Replicas] | str:
    """(up, down) per role for the load, each role sized at its own correction; a str when the
    layout cannot serve the load."""
    up, down = {}, {}
    sized: dict[float, Sizing | str] = {}
    for role in Role:
        factor = correction.of(role)
        if factor not in sized:
            sized[factor] = plan.size(planner_load(observation, policy.declared, factor))
        sizing = sized[factor]
        if isinstance(sizing, str):
            return sizing
        need = sizing.of(role)
        if need is None:
            up[role] = down[role] = 0
            continue
        rate = observation.requests_per_second * factor * (1 + DOWN_TOLERANCE)
        up[role] = need.replicas
        down[role] = (
            max(need.replicas, math.ceil(rate / need.replica_rps - 1e-9))
            if need.replica_rps > 0
            else need.replicas
        )
    return (
        Replicas(up[Role.PREFILL], up[Role.DECODE]),
        Replicas(down[Role.PREFILL], down[Role.DECODE]),
    )


# -- 3. stabilization ----------------------------------------------------------------------------


def _stabilized(
    role: Role, current: int, recommendations: tuple[Recommendation, ...], now: float, policy: ScalePolicy
) -> tuple[int, str]:
    ups = [r.up.of(role) for r in recommendations if r.at > now - policy.up_window_s]
    downs = [r.down.of(role) for r in recommendations if r.at > now - policy.down_window_s]
    latest = recommendations[-1]
    up, down = min(ups, default=latest.up.of(role)), max(downs, default=latest.down.of(role))
    if up > current:
        return up, "up"
    if down < current:
        return down, "down"
    if latest.up.of(role) > current:
        return current, "waiting"  # more is needed, not yet for the whole scale-up window
    if latest.down.of(role) < current:
        return current, "holding"  # fewer would do, not yet for the whole scale-down window
    return current, "steady"


# -- 4. bounds -----------------------------------------------------------------------------------


def _within_budget(desired: Replicas, plan: PlanView, movable: set[Role]) -> Replicas:
    """The replicas scaled down to the GPU budget in proportion, rounded down, then topped up one
    at a time where the rounding cut most; decode keeps one replica, prefill may go to none."""
    budget = plan.budget
    per = plan.gpus_per_replica

    def gpus(counts: dict[Role, int]) -> int:
        return sum(counts[role] * per.of(role) for role in Role)

    wanted = {role: desired.of(role) for role in Role}
    if budget is None or gpus(wanted) <= budget.gpus:
        return desired
    fixed_gpus = sum(wanted[role] * per.of(role) for role in Role if role not in movable)
    movable_gpus = gpus(wanted) - fixed_gpus
    share = max(0.0, (budget.gpus - fixed_gpus) / movable_gpus) if movable_gpus else 0.0
    target = {role: wanted[role] * (share if role in movable else 1.0) for role in Role}
    floor = {role: 1 if role is Role.DECODE and wanted[role] else 0 for role in Role}
    fitted = {
        role: max(floor[role], math.floor(target[role])) if role in movable else wanted[role] for role in Role
    }
    while True:
        room = [
            role
            for role in movable
            if fitted[role] < wanted[role] and gpus(fitted) + per.of(role) <= budget.gpus
        ]
        if not room:
            break
        role = max(room, key=lambda r: (target[r] - fitted[r], r is Role.DECODE))
        fitted[role] += 1
    return Replicas(fitted[Role.PREFILL], fitted[Role.DECODE])


# -- the decision --------------------------------------------------------------------------------


def _hold(inputs: ScaleInputs, history: ScaleHistory, why: str, plan: PlanView) -> ScaleDecision:
    """The current replicas, within the bounds (which apply at once when they change)."""
    desired, notes = _bounded_replicas(inputs.current, inputs, plan)
    verb = (
        f"holding {_counts(desired, plan)}"
        if desired == inputs.current
        else f"{_verb(inputs.current, desired)} to {_counts(desired, plan)}"
    )
    return _decision(inputs, desired, history, f"{verb}: {why}", notes)


def _bounded_replicas(
    stabilized: Replicas, inputs: ScaleInputs, plan: PlanView
) -> tuple[Replicas, list[str]]:
    policy, notes = inputs.policy, []
    counts = {}
    for role in Role:
        count = stabilized.of(role)
        if role in policy.fixed:
            counts[role] = inputs.current.of(role)
            continue
        if role is Role.PREFILL and not plan.disaggregated:
            counts[role] = 0
            continue
        low, high = policy.minimum.of(role), policy.maximum.of(role)
        if count > high:
            notes.append(f"capped at maxReplicas.{role}={high}")
        elif count < low:
            notes.append(f"raised to minReplicas.{role}={low}")
        counts[role] = min(high, max(low, count))
    bounded = Replicas(counts[Role.PREFILL], counts[Role.DECODE])
    movable = {role for role in Role if role not in policy.fixed}
    fitted = _within_budget(bounded, plan, movable)
    if fitted != bounded and plan.budget is not None:
        notes.append(f"{bounded} would exceed the GPU budget of {plan.budget.gpus} ({plan.budget.source})")
    return fitted, notes


def _decision(
    inputs: ScaleInputs,
    desired: Replicas,
    history: ScaleHistory,
    reason: str,
    notes: list[str],
    recommendation: LayoutRecommendation | None = None,
) -> ScaleDecision:
    scaled = desired != inputs.current
    if scaled:
        history = replace(history, last_scale_at=inputs.now)
    fixed = [f"{role} left alone ({why})" for role, why in inputs.policy.fixed.items()]
    line = "; ".join([reason, *notes, *fixed])
    return ScaleDecision(desired=desired, reason=line, history=history, recommendation=recommendation)


def _counts(replicas: Replicas, plan: PlanView) -> str:
    return str(replicas) if plan.disaggregated else f"decode {replicas.decode}"


def _verb(current: Replicas, desired: Replicas) -> str:
    if all(desired.of(role) >= current.of(role) for role in Role):
        return "scaled up"
    if all(desired.of(role) <= current.of(role) for role in Role):
        return "scaled down"
    return "scaled"


def decide_scale(inputs: ScaleInputs, plan: PlanView) -> ScaleDecision:
    """The desired replicas for this interval, and why (see the module's docstring)."""
    now, policy, observation, current = inputs.now, inputs.policy, inputs.observation, inputs.current
    horizon = now - max(policy.up_window_s, policy.down_window_s)
    history = inputs.history
    settled_since = (
        (history.settled_since if history.settled_since is not None else now) if inputs.settled else None
    )
    history = replace(
        history,
        recommendations=tuple(r for r in history.recommendations if r.at > horizon),
        settled_since=settled_since,
    )
    if observation is None:
        return _hold(inputs, history, inputs.unavailable or "waiting for a window of metrics", plan)

    recommendation = None
    rate = _sig(observation.requests_per_second)
    if observation.requests_per_second <= 0:
        up = down = policy.minimum
        because = "no traffic"
    else:
        load = planner_load(observation, policy.declared)
        if _may_learn(inputs, settled_since):
            predicted = plan.predict(load, current)
            if predicted is not None:
                learned = learn_correction(
                    history.correction, observation, predicted, policy.targets, plan.disaggregated
                )
                history = replace(history, correction=learned)
        recommendation = plan.recommend(load)
        sized = _needs(observation, policy, history.correction, plan)
        if isinstance(sized, str):
            return _hold(inputs, history, f"the pool's layout cannot serve {rate} requests/s: {sized}", plan)
        up, down = sized
        because = f"the load needs {_counts(up, plan)}"
        if history.correction != Correction():
            because += f" (correction {history.correction})"
    if not observation.complete:
        down = Replicas(max(down.prefill, current.prefill), max(down.decode, current.decode))
        because += f"; not scaling down: {', '.join(observation.missing)} did not answer"
    history = replace(history, recommendations=(*history.recommendations, Recommendation(now, up, down)))

    counts, moves = {}, {}
    for role in Role:
        counts[role], moves[role] = _stabilized(role, current.of(role), history.recommendations, now, policy)
    desired, notes = _bounded_replicas(Replicas(counts[Role.PREFILL], counts[Role.DECODE]), inputs, plan)
    changes = [
        f"{role} {current.of(role)}->{desired.of(role)}"
        for role in Role
        if desired.of(role) != current.of(role)
    ]
    if changes:
        reason = f"{_verb(current, desired)} {', '.join(changes)}: {rate} requests/s, {because}"
    else:
        reason = f"holding {_counts(desired, plan)}: {because}"
        waiting = [
            f"{role} up once needed for {policy.up_window_s:g}s" for role in Role if moves[role] == "waiting"
        ]
        holding = [
            f"{role} down once not needed for {policy.down_window_s:g}s"
            for role in Role
            if moves[role] == "holding"
        ]
        if waiting or holding:
            reason += f" ({', '.join(waiting + holding)})"
    return _decision(inputs, desired, history, reason, notes, recommendation)
