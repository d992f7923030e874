"""Plans hold in Tandem's own simulator: served by the twin (the simulator's engine core on a
virtual clock, sim/twin.py) at the planned rate, the measured p90 TTFT and ITL are within 0.75-1.25
of the plan's predictions, and no plan the planner calls feasible overloads it.

The two plans of issue #13 run here (both deployments, fixed seeds, a few seconds); the whole
reference matrix, chat, RAG and code on Llama-3.1-8B and 70B, is the slow test and
benchmarks/twin/accuracy.py prints its table.

Before the fixes the first issue plan (aggregated, max_num_seqs 32) left 82 requests waiting after
100 s and measured a p90 TTFT 29 times its prediction; the second measured 1.48x its TTFT.
"""

from __future__ import annotations

import pytest

from tandem.api import DisaggregationMode
from tandem.planner import plan
from tandem.sim.twin import QWEN3_MOE_WORKLOAD, REFERENCE_WORKLOADS, Measurement, Workload, measure

BAND = (0.75, 1.25)
ISSUE = [w for w in REFERENCE_WORKLOADS if w.name.startswith("issue-")]
MODES = [DisaggregationMode.NEVER, DisaggregationMode.ALWAYS]


def _measured(
    workload: Workload, mode: DisaggregationMode, expert_parallel: bool | None = None
) -> Measurement:
    request = workload.request(mode)
    if expert_parallel is not None:
        request = request.model_copy(update={"expert_parallel": expert_parallel})
    result = plan(request)
    assert result.feasible, result.reason
    return measure(request, result, seconds=workload.seconds, seed=0)


def _assert_holds(measured: Measurement) -> None:
    assert measured.bounded, measured.loads
    assert BAND[0] <= measured.ttft_ratio <= BAND[1], (measured.ttft_ms, measured.predicted_ttft_ms)
    assert BAND[0] <= measured.itl_ratio <= BAND[1], (measured.itl_ms, measured.predicted_itl_ms)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("workload", ISSUE, ids=lambda w: w.name)
def test_the_issue_plans_hold_in_the_twin(workload: Workload, mode: DisaggregationMode) -> None:
    _assert_holds(_measured(workload, mode))


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("workload", REFERENCE_WORKLOADS, ids=lambda w: w.name)
def test_every_reference_plan_holds_in_the_twin(workload: Workload, mode: DisaggregationMode) -> None:
    _assert_holds(_measured(workload, mode))


@pytest.mark.parametrize(
    ("mode", "expert_parallel"),
    [
        (DisaggregationMode.ALWAYS, False),
        (DisaggregationMode.NEVER, True),
        (DisaggregationMode.ALWAYS, True),
        (DisaggregationMode.NEVER, False),
    ],
    ids=["disaggregated-tp", "aggregated-ep", "disaggregated-dp-ep", "aggregated-tp"],
)
def test_the_moe_plans_hold_in_the_twin(mode: DisaggregationMode, expert_parallel: bool) -> None:
    """Issue #16: Qwen3-30B-A3B at 20 requests/s measured 11.9 and 5.4 times the predicted p90
    TTFT (disaggregated TP, aggregated EP). Prompts beyond the model's context were served (the twin
    now refuses them, as vLLM does) and the prefill service moments came from 16 quantile points
    whose top one ends at 10708 tokens (they now come from the served prompts' quadrature,
    planner/lengths.py).

    The plan with a DP2 EP prefill replica measured 1.80 (120 s) and 1.55 (600 s): the twin drew
    each request's DP rank at random, where vLLM's balancer picks the least loaded one. The
    aggregated TP4 plan measured 1.36 over 120 s, one draw of a ratio whose standard deviation
    across seeds is 0.25 at that window (mean 1.00 over 20 seeds): the workload's window is now
    the default 600 s."""
    _assert_holds(_measured(QWEN3_MOE_WORKLOAD, mode, expert_parallel))
