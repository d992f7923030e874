"""The plan's short human explanation."""

from __future__ import annotations

from tandem.api import DisaggregationMode
from tandem.planner.model import ModelShape
from tandem.planner.plan import Deployment, DeploymentPlan, RolePlan
from tandem.planner.request import PlanRequest


def _layout(role: RolePlan) -> str:
    pp = f" PP={role.pipeline_parallel}" if role.pipeline_parallel > 1 else ""
    return f"{role.replicas} x {role.gpu_type} TP={role.tensor_parallel}{pp}"


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


def rationale(
    request: PlanRequest,
    model: ModelShape,
    deployment: Deployment,
    recommended: Deployment | None,
    disaggregated: DeploymentPlan,
    aggregated: DeploymentPlan,
    threshold: int | None,
) -> str:
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
    if threshold == 0:
        parts.append("Every prompt is handed off: no local prefill fits the decode replicas' ITL budget.")
    elif threshold is not None:
        pinned = " (pinned)" if request.prompt_tokens_threshold is not None else ""
        parts.append(f"Prompts under {threshold} tokens{pinned} are prefilled on the decode replica itself.")
    return " ".join(parts)
