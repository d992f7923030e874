"""The autoscaler's decision (``decide_scale``), table-driven on an injected clock.

The planner is a linear stand-in (``LinearPlan``: each replica serves a fixed rate), so each case
states its expected counts by arithmetic; the real planner's view is tested in
operator/autoscale/test_replan.py. Every run starts as the autoscaler does: its history holds one
"no fewer, no more than now" recommendation at t = 0, the interval is 15 s, the windows those of
the issue (30 s up, 5 min down, 2 min of metrics).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest
from operator_memory_api import pool_body

from tandem.api import WorkloadSpec
from tandem.api.autoscaling import LayoutRecommendation
from tandem.operator.autoscale.decision import (
    MIN_JUDGED_REQUESTS,
    Correction,
    Prediction,
    Recommendation,
    Replicas,
    RoleNeed,
    ScaleDecision,
    ScaleHistory,
    ScaleInputs,
    ScalePolicy,
    Sizing,
    Targets,
    decide_scale,
    learn_correction,
)
from tandem.operator.autoscale.observation import Lengths, Observation
from tandem.operator.capabilities import Capabilities
from tandem.operator.decide import decide
from tandem.operator.naming import REPLICAS_OWNER_ANNOTATION, Role
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import Images
from tandem.planner import GpuBudget

INTERVAL = 15.0
TARGETS = Targets(ttft_ms=1000, itl_ms=50)


@dataclass
class LinearPlan:
    """Each prefill replica serves ``prefill_rps``, each decode replica ``decode_rps``."""

    prefill_rps: float = 4.0
    decode_rps: float = 10.0
    disaggregated: bool = True
    gpus_per_replica: Replicas = field(default_factory=lambda: Replicas(1, 1))
    budget: GpuBudget | None = None
    prediction: Prediction | None = field(default_factory=lambda: Prediction(ttft_ms=500, itl_ms=20))
    asked: list[float] = field(default_factory=list)  # the rates it was asked to size

    def size(self, load: WorkloadSpec) -> Sizing | str:
        rate = load.requests_per_second
        self.asked.append(rate)

        def need(per: float) -> RoleNeed:
            return RoleNeed(replicas=max(1, math.ceil(rate / per - 1e-9)), replica_rps=per)

        return Sizing(
            prefill=need(self.prefill_rps) if self.disaggregated else None, decode=need(self.decode_rps)
        )

    def predict(self, load: WorkloadSpec, replicas: Replicas) -> Prediction | None:
        return self.prediction

    def recommend(self, load: WorkloadSpec) -> LayoutRecommendation | None:
        return None


def policy(**changes: object) -> ScalePolicy:
    base = ScalePolicy(
        minimum=Replicas(0, 1),
        maximum=Replicas(8, 8),
        up_window_s=30,
        down_window_s=300,
        window_s=120,
        targets=TARGETS,
        declared=WorkloadSpec(),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def traffic(rps: float, **figures: object) -> Observation:
    """A window of ``rps`` with latencies well within the targets and enough requests to judge."""
    base = Observation(
        requests_per_second=rps,
        prompt_tokens=Lengths(1000, 2000),
        output_tokens=Lengths(200, 300),
        ttft_ms=400,
        itl_ms=20,
        judged=10 * MIN_JUDGED_REQUESTS,
    )
    return replace(base, **figures)  # type: ignore[arg-type]


def seeded(current: Replicas, **changes: object) -> ScaleHistory:
    return replace(ScaleHistory(recommendations=(Recommendation(0.0, current, current),)), **changes)  # type: ignore[arg-type]


@dataclass
class Run:
    """Decisions one interval apart, each starting from the replicas the one before chose."""

    current: Replicas
    plan: LinearPlan = field(default_factory=LinearPlan)
    policy: ScalePolicy = field(default_factory=policy)
    history: ScaleHistory | None = None
    now: float = 0.0
    decisions: list[tuple[float, ScaleDecision]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.history is None:
            self.history = seeded(self.current)

    def step(
        self, observation: Observation | None, *, settled: bool = True, unavailable: str | None = None
    ) -> ScaleDecision:
        self.now += INTERVAL
        assert self.history is not None
        decided = decide_scale(
            ScaleInputs(
                now=self.now,
                observation=observation,
                current=self.current,
                settled=settled,
                history=self.history,
                policy=self.policy,
                unavailable=unavailable,
            ),
            self.plan,
        )
        self.history, self.current = decided.history, decided.desired
        self.decisions.append((self.now, decided))
        return decided

    def steps(self, observations: Sequence[Observation | None]) -> list[Replicas]:
        return [self.step(o).desired for o in observations]

    def changes(self) -> list[tuple[float, Replicas]]:
        found, before = [], None
        for at, decided in self.decisions:
            if before is not None and decided.desired != before:
                found.append((at, decided.desired))
            before = decided.desired
        return found


# -- step up, step down, noise ------------------------------------------------------------------


def test_a_step_up_waits_for_the_scale_up_window_then_goes_all_the_way() -> None:
    run = Run(current=Replicas(1, 1))
    # 11 requests/s: prefill needs ceil(11/4) = 3, decode ceil(11/10) = 2.
    assert run.steps([traffic(11)] * 3) == [Replicas(1, 1), Replicas(3, 2), Replicas(3, 2)]
    at, decided = run.decisions[1]
    assert at == 30  # the t = 0 "no more than now" left the 30 s window
    assert decided.reason.startswith("scaled up prefill 1->3, decode 1->2: 11 requests/s")
    assert decided.history.last_scale_at == 30
    assert "prefill up once needed for 30s" in run.decisions[0][1].reason


@pytest.mark.parametrize(
    ("low_rps", "expected"),
    [
        (2.0, Replicas(1, 1)),  # prefill ceil(2 x 1.1 / 4) = 1, decode 1
        (7.0, Replicas(2, 1)),  # prefill ceil(7.7 / 4) = 2
    ],
)
def test_a_step_down_comes_once_the_scale_down_window_has_passed(low_rps: float, expected: Replicas) -> None:
    run = Run(current=Replicas(3, 2))
    got = run.steps([traffic(low_rps)] * 21)  # 15 s ... 315 s
    assert set(got[:19]) == {Replicas(3, 2)}  # up to 285 s the t = 0 recommendation still counts
    assert got[19] == expected and run.decisions[19][0] == 300
    assert run.decisions[19][1].reason.startswith("scaled down")
    assert "down once not needed for 300s" in run.decisions[0][1].reason


def test_a_scale_down_needs_the_tolerance_to_spare() -> None:
    """8 requests/s fits 2 prefill replicas of 4 exactly: up needs 2, but 2 would not hold 8.8, so
    3 replicas stay (hysteresis); at 7 requests/s 2 hold 7.7 and the pool scales down."""
    run = Run(current=Replicas(3, 1))
    assert run.steps([traffic(8.0)] * 25)[-1] == Replicas(3, 1)
    run = Run(current=Replicas(3, 1))
    assert run.steps([traffic(7.0)] * 25)[-1] == Replicas(2, 1)


def test_noise_around_a_boundary_makes_at_most_one_change_and_never_flaps() -> None:
    rng = random.Random(7)
    run = Run(current=Replicas(2, 1))
    # 8 requests/s +-12 %: prefill needs 2 or 3 from one interval to the next, for an hour.
    run.steps([traffic(8.0 * rng.uniform(0.88, 1.12)) for _ in range(240)])
    changes = run.changes()
    assert len(changes) <= 1
    assert all(desired.prefill >= 2 for _, desired in changes)


def test_a_burst_shorter_than_the_scale_up_window_changes_nothing() -> None:
    run = Run(current=Replicas(1, 1))
    got = run.steps([traffic(2), traffic(30), traffic(2), traffic(30), traffic(2)])
    assert set(got) == {Replicas(1, 1)}


# -- bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rps", "bounds", "expected", "note"),
    [
        (100.0, {}, Replicas(8, 8), "capped at maxReplicas.prefill=8"),
        (100.0, {"maximum": Replicas(4, 2)}, Replicas(4, 2), "capped at maxReplicas.decode=2"),
        (1.0, {"minimum": Replicas(2, 3)}, Replicas(2, 3), "raised to minReplicas.prefill=2"),
        (0.0, {"minimum": Replicas(1, 2)}, Replicas(1, 2), "no traffic"),
    ],
)
def test_min_and_max_bound_each_role(
    rps: float, bounds: dict[str, Replicas], expected: Replicas, note: str
) -> None:
    run = Run(current=Replicas(1, 1), policy=policy(**bounds), history=ScaleHistory())
    decided = run.step(traffic(rps))
    assert decided.desired == expected
    assert note in decided.reason


def test_new_bounds_apply_at_once_even_without_metrics() -> None:
    run = Run(current=Replicas(5, 5), policy=policy(maximum=Replicas(3, 4)))
    decided = run.step(None, unavailable="no router answered")
    assert decided.desired == Replicas(3, 4)
    assert decided.reason.startswith("scaled down to prefill 3, decode 4: no router answered")


@pytest.mark.parametrize(
    ("per_replica", "budget", "expected"),
    [
        # 30 requests/s: prefill 8 x 2 GPUs + decode 3 x 2 GPUs = 22 GPUs wanted.
        (Replicas(2, 2), 22, Replicas(8, 3)),
        (Replicas(2, 2), 12, Replicas(4, 2)),  # halved, both roles in proportion
        (Replicas(2, 2), 4, Replicas(1, 1)),
        (Replicas(4, 1), 2, Replicas(0, 2)),  # prefill gives way first; decode keeps serving
    ],
)
def test_both_roles_together_stay_within_the_gpu_budget(
    per_replica: Replicas, budget: int, expected: Replicas
) -> None:
    plan = LinearPlan(gpus_per_replica=per_replica, budget=GpuBudget(gpus=budget, source="spec.maxGpus"))
    run = Run(current=Replicas(1, 1), plan=plan, history=ScaleHistory())
    decided = run.step(traffic(30))
    assert decided.desired == expected
    gpus = decided.desired.prefill * per_replica.prefill + decided.desired.decode * per_replica.decode
    assert gpus <= budget
    if expected != Replicas(8, 3):
        assert f"GPU budget of {budget} (spec.maxGpus)" in decided.reason


def test_an_aggregated_pool_scales_its_one_role_and_runs_no_prefill() -> None:
    run = Run(current=Replicas(0, 1), plan=LinearPlan(disaggregated=False), history=ScaleHistory())
    decided = run.step(traffic(25))
    assert decided.desired == Replicas(0, 3)
    assert decided.reason == "scaled up decode 1->3: 25 requests/s, the load needs decode 3"


def test_a_role_left_alone_keeps_its_replicas() -> None:
    """A pinned role, or one an HPA scales: the autoscaler sizes only the other."""
    pinned = policy(fixed={Role.DECODE: "spec.decode.replicas is pinned to 2"})
    run = Run(current=Replicas(1, 2), policy=pinned, history=ScaleHistory())
    decided = run.step(traffic(40))
    assert decided.desired == Replicas(8, 2)
    assert "decode left alone (spec.decode.replicas is pinned to 2)" in decided.reason


# -- zero traffic, missing metrics -------------------------------------------------------------


def test_no_traffic_goes_to_min_replicas_after_the_scale_down_window() -> None:
    run = Run(current=Replicas(3, 2))
    got = run.steps([traffic(0.0, judged=0)] * 20)
    assert got[18] == Replicas(3, 2) and got[19] == Replicas(0, 1)
    assert run.decisions[19][1].reason == "scaled down prefill 3->0, decode 2->1: 0 requests/s, no traffic"


def test_no_observation_holds_the_replicas() -> None:
    run = Run(current=Replicas(3, 2))
    for _ in range(30):
        decided = run.step(None)
    assert decided.desired == Replicas(3, 2)
    assert decided.reason == "holding prefill 3, decode 2: waiting for a window of metrics"


def test_with_a_router_missing_the_pool_scales_up_but_never_down() -> None:
    run = Run(current=Replicas(3, 2))
    partial = ("router-b: connection refused",)
    assert run.steps([traffic(1.0, missing=partial)] * 30)[-1] == Replicas(3, 2)
    assert "not scaling down: router-b: connection refused did not answer" in run.decisions[-1][1].reason
    assert run.steps([traffic(40.0, missing=partial)] * 3)[-1] == Replicas(8, 4)


# -- correction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measured", "disaggregated", "expected"),
    [
        # Disaggregated: TTFT teaches prefill, ITL decode. Predicted: TTFT 500 ms, ITL 20 ms.
        ({"ttft_ms": 1500.0}, True, (2.0, 1.0)),  # ratio 3: halfway is 2, the bound
        ({"ttft_ms": 1100.0}, True, (1.6, 1.0)),  # ratio 2.2: 1 + (2.2 - 1) / 2
        ({"itl_ms": 60.0}, True, (1.0, 2.0)),
        ({"ttft_ms": 900.0}, True, (1.0, 1.0)),  # ratio 1.8 but within the target: no derate
        ({"ttft_ms": 300.0}, True, (1.0, 1.0)),  # faster than planned: never below 1
        # Aggregated: its one role (decode) from the worse of both.
        ({"ttft_ms": 1100.0, "itl_ms": 30.0}, False, (1.0, 1.6)),
    ],
)
def test_a_miss_the_plan_did_not_predict_teaches_a_bounded_correction(
    measured: dict[str, float], disaggregated: bool, expected: tuple[float, float]
) -> None:
    learned = learn_correction(
        Correction(), traffic(5, **measured), Prediction(ttft_ms=500, itl_ms=20), TARGETS, disaggregated
    )
    assert (learned.prefill, learned.decode) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("measured_ttft_ms", "settles_at"),
    [
        (400.0, 1.0),  # measured 400 / predicted 500: faster than planned, back to no derate
        (750.0, 1.5),  # still 1.5 x the prediction (within the target thanks to the derate): stays
    ],
)
def test_the_correction_relaxes_while_the_targets_hold_but_not_below_the_measured_ratio(
    measured_ttft_ms: float, settles_at: float
) -> None:
    correction = Correction(prefill=2.0, decode=2.0)
    for _ in range(40):
        observed = traffic(5, ttft_ms=measured_ttft_ms)
        correction = learn_correction(correction, observed, Prediction(500, 20), TARGETS, True)
    assert correction.prefill == pytest.approx(settles_at, abs=0.01)
    assert correction.decode == pytest.approx(1.0, abs=0.01)  # ITL 20 ms, as predicted


def test_the_correction_sizes_the_role_for_more_load_and_shows_in_the_reason() -> None:
    """Steady at 6 requests/s on 2 prefill replicas, TTFT measures 3x the prediction: the
    correction goes to 2, the plan is asked for 12 requests/s, prefill needs 3."""
    run = Run(current=Replicas(2, 1), history=seeded(Replicas(2, 1), settled_since=0.0))
    run.now = 120.0  # a whole window since the pool settled
    slow = traffic(6, ttft_ms=1500.0)
    run.steps([slow] * 3)
    assert run.history is not None and run.history.correction.prefill == 2.0
    assert run.current == Replicas(3, 1)
    assert 12.0 in run.plan.asked
    assert "(correction prefill x2.00, decode x1.00)" in run.decisions[-1][1].reason


@pytest.mark.parametrize(
    ("why", "inputs"),
    [
        ("the pool is not settled", {"settled": False}),
        ("too few requests to judge", {"observation": traffic(6, ttft_ms=1500.0, judged=5)}),
        ("a router did not answer", {"observation": traffic(6, ttft_ms=1500.0, missing=("r: x",))}),
    ],
)
def test_no_correction_is_learned_from_a_window_that_cannot_tell(why: str, inputs: dict[str, object]) -> None:
    history = seeded(Replicas(2, 1), settled_since=0.0)
    base = ScaleInputs(
        now=300.0,
        observation=traffic(6, ttft_ms=1500.0),
        current=Replicas(2, 1),
        settled=True,
        history=history,
        policy=policy(),
    )
    decided = decide_scale(replace(base, **inputs), LinearPlan())  # type: ignore[arg-type]
    assert decided.correction == Correction(), why


def test_no_correction_is_learned_where_the_plan_says_the_replicas_do_not_hold() -> None:
    """Under-provisioned replicas explain their own miss: the planner sizes them up, no derate."""
    run = Run(
        current=Replicas(1, 1),
        plan=LinearPlan(prediction=None),
        history=seeded(Replicas(1, 1), settled_since=0.0),
    )
    run.now = 120.0
    run.steps([traffic(11, ttft_ms=5000.0)] * 3)
    assert run.history is not None and run.history.correction == Correction()


def test_no_correction_is_learned_within_a_window_of_a_scale() -> None:
    run = Run(current=Replicas(2, 1), history=seeded(Replicas(2, 1), settled_since=0.0, last_scale_at=100.0))
    run.now = 120.0
    run.step(traffic(6, ttft_ms=1500.0))  # at 135 s, the window still shows what ran before 100 s
    assert run.history is not None and run.history.correction == Correction()


@pytest.mark.parametrize(
    ("mode", "replicas"),
    [("Off", {"prefill": 1, "decode": 1}), ("Planner", {"prefill": 1, "decode": 1}), ("External", {})],
)
def test_external_mode_makes_no_decision_and_renders_no_replicas(mode: str, replicas: dict[str, int]) -> None:
    """External: the operator decides nothing (an HPA or KEDA does), and the engine workloads it
    renders leave spec.replicas out (and the owner annotation, which the handover sets)."""
    decision = decide(pool_body(autoscaling={"mode": mode}), Capabilities(), Images(), catalog_planner())
    assert decision.objects is not None
    engines = {
        o["metadata"]["name"].removeprefix("sim-llama-"): o
        for o in decision.objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] != "sim-llama-router"
    }
    assert {role: o["spec"]["replicas"] for role, o in engines.items() if "replicas" in o["spec"]} == replicas
    owners = {o["metadata"].get("annotations", {}).get(REPLICAS_OWNER_ANNOTATION) for o in engines.values()}
    assert owners == ({None} if mode == "External" else {"operator"})
