"""The simulator timed by an MoE plan follows the planner's cost model (tandem.planner.cost and
tandem.planner.moe): the routed experts' reads saturate with the tokens of a step, so the plan gives
their time at token counts (`EngineTiming.moe_pass_ms`) and the linear coefficients cover the rest.

Before, the experts were folded into the linear coefficients: a DP2 x TP1 EP prefill replica of
Qwen3-30B-A3B (20 requests/s, handoffs always) was fitted at one sequence and timed a decode step
of 200 at 8.6 times the cost model's; the decode replica (TP2 EP), fitted at its operating point,
timed a step of 200 sequences 1.4 times the model's and a decode leg's one-token prefill 2.5 times
it, and the twin measured its ITL at 1.55 times the plan's prediction (1.06 now)."""

from __future__ import annotations

import argparse

import pytest
from operator_decisions import pool_body, run

from tandem.api import DisaggregationMode, EngineTiming
from tandem.operator.naming import Role
from tandem.planner import load_catalog, plan
from tandem.planner.cost import ReplicaCost
from tandem.planner.layouts import Layout
from tandem.planner.plan import RolePlan
from tandem.planner.planner import calibrations_for
from tandem.planner.request import PlanRequest
from tandem.sim import cli as sim_cli
from tandem.sim.scheduler import Chunk, Sequence, StepPlan, step_ms
from tandem.sim.twin import QWEN3_MOE_WORKLOAD as QWEN

CONTEXT = 2100  # tokens per decoding sequence


def _roles(mode: DisaggregationMode) -> tuple[PlanRequest, list[RolePlan]]:
    request = QWEN.request(mode)
    result = plan(request)
    assert result.feasible, result.reason
    return request, [r for r in (result.prefill, result.decode) if r is not None and r.replicas]


def _cost(request: PlanRequest, role: RolePlan) -> ReplicaCost:
    catalog = load_catalog()
    gpu = catalog.gpu(role.gpu_type)
    calibration = calibrations_for(request, catalog)[gpu.name]
    layout = Layout(
        gpu,
        role.tensor_parallel,
        role.pipeline_parallel,
        calibration,
        role.data_parallel,
        role.expert_parallel,
        role.all2all_backend,
    )
    return layout.cost(catalog.model(request.model))


def _decode_step(timing: EngineTiming, seqs: int) -> float:
    chunks = tuple(Chunk(Sequence(f"s{i}", CONTEXT), CONTEXT - 1, 1, decode=True) for i in range(seqs))
    return step_ms(StepPlan(chunks=chunks), timing)


def _prefill(timing: EngineTiming, tokens: int) -> float:
    return step_ms(StepPlan(chunks=(Chunk(Sequence("p", tokens), 0, tokens, decode=False),)), timing)


@pytest.mark.parametrize("mode", [DisaggregationMode.ALWAYS, DisaggregationMode.NEVER], ids=str)
def test_an_moe_plans_steps_take_the_cost_models_time(mode: DisaggregationMode) -> None:
    request, roles = _roles(mode)
    assert any(role.expert_parallel for role in roles)
    for role in roles:
        cost, timing = _cost(request, role), role.engine_timing
        assert timing.moe_pass_ms, role.role
        if role.role != "prefill":  # a prefill replica decodes one token per request
            for seqs in (1, 8, 32, 112, 200, 400):
                assert _decode_step(timing, seqs) == pytest.approx(cost.step_ms(seqs, CONTEXT), rel=0.03)
        if role.role != "aggregated":  # its chunks ride beside decodes (prefill_coefficients)
            for tokens in (1, 256, 2000, 8000):
                assert _prefill(timing, tokens) == pytest.approx(cost.prefill_ms([tokens]), rel=0.01)


def test_a_dense_plan_has_no_moe_points() -> None:
    _, roles = _roles(DisaggregationMode.ALWAYS)
    dense = plan(
        QWEN.request(DisaggregationMode.ALWAYS).model_copy(
            update={"model": "meta-llama/Llama-3.1-8B-Instruct"}
        )
    )
    assert roles and dense.decode is not None and dense.decode.engine_timing.moe_pass_ms == ()


def test_moe_points_interpolate_and_reach_the_simulator_through_its_flags() -> None:
    timing = EngineTiming(moe_pass_ms="1:2,4:5,8:6")
    assert [timing.moe_ms(t) for t in (0, 0.5, 1, 2, 4, 6, 8, 16)] == [0, 1, 2, 3, 5, 5.5, 6, 8]
    decision = run(pool_body(model__name=QWEN.model, workload__requestsPerSecond=20,
                             disaggregation__kvTransfer={"connector": "nixl"}))  # fmt: skip
    assert decision.layout is not None and decision.objects is not None
    planned = decision.layout.role(Role.PREFILL).timing
    engine = next(o for o in decision.objects if o["metadata"]["name"] == "sim-llama-prefill")
    parser = argparse.ArgumentParser()
    sim_cli.register(parser.add_subparsers())
    args = parser.parse_args(["sim", *engine["spec"]["template"]["spec"]["containers"][0]["args"]])
    simulated = sim_cli.build_settings(args, {}).timing
    assert len(simulated.moe_pass_ms) == len(planned.moe_pass_ms) > 1
    for (tokens, ms), (want_tokens, want_ms) in zip(simulated.moe_pass_ms, planned.moe_pass_ms, strict=True):
        assert tokens == want_tokens and ms == pytest.approx(want_ms, rel=1e-5)


@pytest.mark.parametrize("points", ["1:2,1:3", "4:1,2:1", "0:1", "1:-1", "1-2"])
def test_moe_points_that_are_not_ascending_positive_tokens_are_refused(points: str) -> None:
    with pytest.raises(ValueError, match="moe_pass_ms"):
        EngineTiming(moe_pass_ms=points)
