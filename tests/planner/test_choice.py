"""The choice between aggregated and disaggregated serving: fewer GPUs, then lower cost, then more
SLO headroom (the spare share of the tightest margin: TTFT, ITL, or the planned load against the
most the deployment sustains), then aggregated; the rationale says which and why."""

from __future__ import annotations

import pytest

from tandem.api import SloSpec, TokenStats, WorkloadSpec
from tandem.planner import PlanRequest, load_calibration, load_catalog, plan
from tandem.planner import planner as choice
from tandem.planner.plan import Deployment, DeploymentPlan

H100 = load_catalog().gpu("H100-80GB")
# The H100 calibration shipped when issue #12 was filed (fit of 2026-11-21), in today's keys: its
# one decode bandwidth, mbu_max, now prices the KV reads too (kv_read_eff) and no stream bound;
# mfu_decode was the class default. The sizing it gives is the issue's to 0.5 ms of ITL.
AS_FILED = load_calibration(H100).model_copy(
    update={
        "mbu_max": 0.933,
        "mbu_batch_half": 826,
        "kv_read_eff": 0.933,
        "kv_stream_eff": 1.0,
        "mfu_decode": 0.45,
        "step_overhead_ms": 0.0,
        "layer_overhead_us": 67.7,
        "mfu_max": 0.706,
        "t_half_tokens": 83,
        "attn_eff": 0.237,
        "prefill_overhead_ms": 0.0,
    }
)


def test_the_tie_of_issue_12_goes_to_the_deployment_with_more_slo_headroom() -> None:
    """Llama-3.1-70B on H100 at 5 requests/s of 4,000-token prompts; the rest as
    examples/llama-3.1-70b-h100.yaml (300 output tokens, ITL 50 ms) and the SLO defaults (p90), with
    a 1,000 ms TTFT target: both deployments need 16 GPUs. Aggregated meets ITL with 4 % to spare
    (at the planned load; 1 % at its design batch), disaggregated with half the ITL target left (its
    tightest margin, the load against what it sustains, has 22 %)."""
    request = PlanRequest(
        model="meta-llama/Llama-3.1-70B-Instruct",
        prefill_gpus=(H100.name,),
        decode_gpus=(H100.name,),
        slo=SloSpec(ttft_ms=1000, itl_ms=50),
        workload=WorkloadSpec(
            requests_per_second=5, prompt_tokens=TokenStats(mean=4000), output_tokens=TokenStats(mean=300)
        ),
        calibrations={H100.name: AS_FILED},
    )
    result = plan(request)
    a, d = result.aggregated, result.disaggregated
    assert (a.gpus, a.cost_per_hour_usd) == (d.gpus, d.cost_per_hour_usd) and a.gpus == 16
    assert a.predicted_itl_ms is not None and 47.5 <= a.predicted_itl_ms <= 48.5
    assert d.predicted_itl_ms is not None and 25 <= d.predicted_itl_ms <= 26
    assert result.recommended == result.deployment == "Disaggregated"
    assert (
        "At equal cost the planner recommends Disaggregated for its SLO headroom: its tightest margin, "
        "the load, 5 of the 6.38 requests/s it sustains, has 22% to spare; aggregated's, ITL 48.1 ms "
        "of 50 ms, 4%."
    ) in result.rationale


SLO = SloSpec(ttft_ms=1000, itl_ms=50)


RPS = 3.0


def _deployment(
    kind: Deployment, gpus: int, ttft_ms: float, itl_ms: float, max_rps: float = 30.0
) -> DeploymentPlan:
    return DeploymentPlan(
        kind=kind,
        feasible=True,
        gpus=gpus,
        cost_per_hour_usd=gpus * 12.29,
        predicted_ttft_ms=ttft_ms,
        predicted_itl_ms=itl_ms,
        max_requests_per_second=max_rps,
    )


@pytest.mark.parametrize(
    ("aggregated", "disaggregated", "expected"),
    [
        # Cost decides before headroom: 12 GPUs at 1 % spare beat 16 at 50 %.
        ((12, 600, 49.5), (16, 500, 25), "Aggregated"),
        ((16, 600, 25), (12, 990, 49.5), "Disaggregated"),
        # At equal cost the tighter target decides: aggregated's ITL leaves 1 %, disaggregated's TTFT 24 %.
        ((16, 625, 49.6), (16, 764, 25.6), "Disaggregated"),
        # ... also when it is aggregated that has more to spare.
        ((16, 400, 30), (16, 950, 20), "Aggregated"),
        # Equal headroom: the simpler deployment.
        ((16, 500, 25), (16, 500, 25), "Aggregated"),
        # The load is a margin too: disaggregated's latencies leave 27 % but it runs at 89 % of what
        # it sustains; aggregated leaves 25 % everywhere. (The twin's code-8B case: aggregated on the
        # same 2 GPUs served 1.7 times the goodput.)
        ((2, 486, 30.0, 4.18), (2, 730, 16.4, 3.36), "Aggregated"),
    ],
)
def test_choice_rule(
    aggregated: tuple[int, float, float] | tuple[int, float, float, float],
    disaggregated: tuple[int, float, float] | tuple[int, float, float, float],
    expected: str,
) -> None:
    assert (
        choice.recommend(
            _deployment("Disaggregated", *disaggregated), _deployment("Aggregated", *aggregated), SLO, RPS
        )
        == expected
    )


def test_headroom_is_the_tightest_margins_spare_share() -> None:
    margin = _deployment("Aggregated", 16, 625, 49.6).slo_headroom(SLO, RPS)
    assert (margin.name, margin.spare) == ("ITL", pytest.approx(1 - 49.6 / 50))
    margin = _deployment("Disaggregated", 16, 764, 25.6).slo_headroom(SLO, RPS)
    assert (margin.name, margin.spare) == ("TTFT", pytest.approx(1 - 764 / 1000))
    margin = _deployment("Disaggregated", 2, 730, 16.4, max_rps=3.36).slo_headroom(SLO, RPS)
    assert (margin.name, margin.spare) == ("load", pytest.approx(1 - 3 / 3.36))


def test_the_code_workload_of_the_twin_goes_to_aggregated_for_its_load_headroom() -> None:
    """Llama-3.1-8B on H100 at 3 requests/s of 8,000/12,000-token prompts and 500 output tokens,
    TTFT 2 s, ITL 40 ms: both deployments take 2 GPUs. Before: the latency margins alone chose
    disaggregated (27 % to spare against 25 %), which sustains 3.36 requests/s; aggregated
    sustains 4.18, and in the twin it served 1.7 times the goodput."""
    request = PlanRequest(
        model="meta-llama/Llama-3.1-8B-Instruct",
        prefill_gpus=(H100.name,),
        decode_gpus=(H100.name,),
        slo=SloSpec(ttft_ms=2000, itl_ms=40),
        workload=WorkloadSpec(
            requests_per_second=3,
            prompt_tokens=TokenStats(mean=8000, p90=12000),
            output_tokens=TokenStats(mean=500),
        ),
    )
    result = plan(request)
    a, d = result.aggregated, result.disaggregated
    assert (a.gpus, a.cost_per_hour_usd) == (d.gpus, d.cost_per_hour_usd)
    assert result.recommended == "Aggregated"
    assert "the load, 3 of the" in result.rationale
