"""The plan's short human explanation."""

from __future__ import annotations

from tandem.api import DisaggregationMode, SloSpec
from tandem.planner.model import ModelShape
from tandem.planner.plan import Deployment, DeploymentPlan, Margin, RolePlan
from tandem.planner.request import PlanRequest


def _layout(role: RolePlan) -> str:
    pp = f" PP={role.pipeline_parallel}" if role.pipeline_parallel > 1 else ""
    dp = f" DP={role.data_parallel}" if role.data_parallel > 1 else ""
    ep = f" EP={role.data_parallel * role.tensor_parallel}" if role.expert_parallel else ""
    backend = f" ({role.all2all_backend})" if role.all2all_backend else ""
    return f"{role.replicas} x {role.gpu_type} TP={role.tensor_parallel}{pp}{dp}{ep}{backend}"


def _summary(d: DeploymentPlan) -> str:
    return f"{d.gpus} GPUs, {d.cost_per_hour_usd:.2f} USD/h"


def describe(d: DeploymentPlan) -> str:
    """One line on a sized deployment."""
    if not d.feasible:
        return f"{d.kind} is infeasible: {d.reason}"
    if d.kind == "Disaggregated":
        assert d.prefill and d.decode
        roles = f"prefill {_layout(d.prefill)}, decode {_layout(d.decode)}"
    else:
        assert d.decode
        roles = f"{_layout(d.decode)} prefilling in {d.decode.prefill_chunk_tokens}-token chunks"
    return (
        f"{d.kind}: {roles}; {_summary(d)}; TTFT {d.predicted_ttft_ms:.0f} ms, "
        f"ITL {d.predicted_itl_ms:.1f} ms, up to {d.max_requests_per_second:.2f} requests/s"
    )


def _margin(m: Margin) -> str:
    if m.name == "load":
        return f"the load, {m.predicted or 0:g} of the {m.limit or 0:.2f} requests/s it sustains"
    decimals = 0 if m.name == "TTFT" else 1  # as `describe` prints each
    return f"{m.name} {m.predicted or 0:.{decimals}f} ms of {m.limit or 0:g} ms"


def _tie(
    disaggregated: DeploymentPlan,
    aggregated: DeploymentPlan,
    recommended: Deployment,
    slo: SloSpec,
    requests_per_second: float,
) -> str:
    """Why the recommendation at equal cost: the SLO headroom of each."""
    winner, loser = (
        (disaggregated, aggregated) if recommended == "Disaggregated" else (aggregated, disaggregated)
    )
    won, lost = winner.slo_headroom(slo, requests_per_second), loser.slo_headroom(slo, requests_per_second)
    if won.spare == lost.spare:
        return f"At equal cost and SLO headroom the planner recommends {recommended}, the simpler."
    return (
        f"At equal cost the planner recommends {recommended} for its SLO headroom: its tightest margin, "
        f"{_margin(won)}, has {won.spare:.0%} to spare; {loser.kind.lower()}'s, {_margin(lost)}, "
        f"{lost.spare:.0%}."
    )


def rationale(
    request: PlanRequest,
    model: ModelShape,
    deployment: Deployment,
    recommended: Deployment | None,
    disaggregated: DeploymentPlan,
    aggregated: DeploymentPlan,
    threshold: int | None,
    parallelism: str = "",
) -> str:
    """`parallelism`: why MoE roles run expert-parallel or not (tandem.planner.parallelism)."""
    chosen, other = (
        (disaggregated, aggregated) if deployment == "Disaggregated" else (aggregated, disaggregated)
    )
    slo = request.slo
    targets = (
        f"{model.name} at {request.workload.requests_per_second:g} requests/s, p{slo.percentile:g} TTFT <= "
        f"{slo.ttft_ms:g} ms and ITL <= {slo.itl_ms:g} ms."
    )
    parts = [targets, describe(chosen) + "."]
    if other.feasible and chosen.feasible:
        parts.append(f"The {other.kind.lower()} alternative needs {_summary(other)}.")
        if chosen.cost_key == other.cost_key and recommended is not None:
            parts.append(
                _tie(disaggregated, aggregated, recommended, slo, request.workload.requests_per_second)
            )
    elif chosen.feasible:
        parts.append(f"{other.kind} serving cannot meet the targets.")
    if request.mode != DisaggregationMode.AUTO or deployment != recommended:
        why = (
            f"mode {request.mode}"
            if request.mode != DisaggregationMode.AUTO
            else "prefill replicas pinned to 0"
        )
        advice = (
            f"; the planner recommends {recommended}" if recommended and recommended != deployment else ""
        )
        parts.append(f"{deployment} because of {why}{advice}.")
    if parallelism:
        parts.append(parallelism)
    if threshold == 0:
        parts.append("Every prompt is handed off: no local prefill fits the decode replicas' ITL budget.")
    elif threshold is not None:
        pinned = " (pinned)" if request.prompt_tokens_threshold is not None else ""
        parts.append(f"Prompts under {threshold} tokens{pinned} are prefilled on the decode replica itself.")
    return " ".join(parts)
