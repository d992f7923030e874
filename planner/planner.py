"""Planning: resolve the model and GPUs, size both deployments, pick one, explain it.

`plan(request)` is the entry point; `plan_pool(spec)` builds the request from an InferencePool spec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tandem.api import DisaggregationMode, InferencePoolSpec
from tandem.planner import cost
from tandem.planner.aggregated import size_aggregated
from tandem.planner.calibration import Calibration, load_calibration
from tandem.planner.catalog import Catalog, load_catalog
from tandem.planner.demand import Demand
from tandem.planner.hf_config import shape_from_hf_config
from tandem.planner.layouts import Layout, candidate_layouts
from tandem.planner.model import ModelShape, shape_from_architecture
from tandem.planner.plan import Deployment, DeploymentPlan, Plan
from tandem.planner.rationale import rationale
from tandem.planner.request import PlanRequest, RolePins
from tandem.planner.roles import role_plan
from tandem.planner.sizing import Failure, Outcome, Sized, size_decode, size_prefill
from tandem.planner.threshold import prompt_tokens_threshold


def plan_pool(spec: InferencePoolSpec, catalog: Catalog | None = None) -> Plan:
    """The plan for an InferencePool spec (what the operator calls)."""
    return plan(PlanRequest.from_pool_spec(spec), catalog)


def resolve_model(request: PlanRequest, catalog: Catalog) -> ModelShape:
    """The model's shape: a given config.json, else the spec's architecture, else the catalog."""
    if request.hf_config is not None:
        shape = shape_from_hf_config(request.hf_config, request.model)
    elif request.architecture is not None:
        shape = shape_from_architecture(request.model, request.architecture)
    else:
        shape = catalog.model(request.model)
    return shape.with_dtype(str(request.dtype)).model_copy(update={"kv_cache_dtype": request.kv_cache_dtype})


def plan(request: PlanRequest, catalog: Catalog | None = None) -> Plan:
    """Size `request` both disaggregated and aggregated and deploy per its mode."""
    catalog = catalog or load_catalog()
    model = resolve_model(request, catalog)
    demand = Demand.from_spec(request.workload, request.slo)
    calibrations = _calibrations(request, catalog)
    context_limit = request.max_model_len or model.max_context_tokens
    too_long = (
        f"requests of {demand.prompt.mean:.0f} + {demand.output_tokens:.0f} tokens exceed the "
        f"{context_limit}-token context of {model.name}"
        if context_limit and demand.prompt.mean + demand.output_tokens > context_limit
        else None
    )

    def layouts(gpu_names: Sequence[str], pins: RolePins) -> tuple[list[Layout], str | None]:
        found: list[Layout] = []
        reasons: list[str] = []
        for name in gpu_names:
            gpu = catalog.gpu(name)
            more, reason = candidate_layouts(
                model, gpu, calibrations[gpu.name], request.gpus_per_node, pins, demand.longest_request
            )
            found += more
            reasons += [reason] if reason else []
        return found, None if found else "; ".join(reasons)

    decode_layouts, decode_unfit = layouts(request.decode_gpus, request.decode)
    prefill_layouts, prefill_unfit = layouts(request.prefill_gpus, request.prefill)
    decode = (
        Failure(decode_unfit) if decode_unfit else size_decode(model, decode_layouts, demand, request.decode)
    )

    def handoff_gbps(prefill_layout: Layout) -> float:
        if request.kv_link_gbps is not None:
            return request.kv_link_gbps
        decode_gpu = decode.layout.gpu if isinstance(decode, Sized) else prefill_layout.gpu
        return min(prefill_layout.gpu.network_gbps, decode_gpu.network_gbps)

    def after_prefill_ms(layout: Layout, tokens: int) -> float:
        decode_tp = decode.layout.tp if isinstance(decode, Sized) else layout.tp
        streams = cost.kv_transfer_streams(model, layout.tp, decode_tp)
        # The first token comes from a decode step; at a full batch it is slowest, and that bound does
        # not move with the load (so more load never buys a cheaper prefill pool).
        first_step = decode.full_step_ms if isinstance(decode, Sized) else 0.0
        return (
            cost.kv_transfer_ms(model, tokens, handoff_gbps(layout), layout.calibration, streams) + first_step
        )

    prefill = (
        Failure(prefill_unfit)
        if prefill_unfit
        else size_prefill(model, prefill_layouts, demand, request.prefill, after_prefill_ms)
    )
    aggregated = (
        Failure(decode_unfit)
        if decode_unfit
        else size_aggregated(model, decode_layouts, demand, request.decode)
    )
    if too_long:
        prefill = decode = aggregated = Failure(too_long)

    def handoff_ms_per_token(p: Layout, d: Layout) -> float:
        streams = cost.kv_transfer_streams(model, p.tp, d.tp)
        return (
            cost.kv_transfer_ms(model, 1, handoff_gbps(p), p.calibration, streams)
            - p.calibration.kv_transfer_latency_ms
        )

    disaggregated = _disaggregated(model, prefill, decode, request, demand, handoff_ms_per_token)
    aggregate = _aggregated(model, aggregated, request, demand)
    recommended = _recommend(disaggregated, aggregate)
    deployment = _deployment(request, recommended)
    chosen = disaggregated if deployment == "Disaggregated" else aggregate
    reason = chosen.reason
    if request.mode == DisaggregationMode.AUTO and recommended is None:
        reason = (
            f"neither deployment meets the targets. Disaggregated: {disaggregated.reason}. "
            f"Aggregated: {aggregate.reason}"
        )
    threshold = None
    if deployment == "Disaggregated" and isinstance(prefill, Sized) and isinstance(decode, Sized):
        threshold = (
            request.prompt_tokens_threshold
            if request.prompt_tokens_threshold is not None
            else prompt_tokens_threshold(model, prefill, decode, demand, handoff_gbps(prefill.layout))
        )
    deployed_prefill = chosen.prefill
    if deployment == "Aggregated":
        # The prefill role stays in the plan with no replicas, shaped as it would be deployed.
        shape = disaggregated.prefill or (
            aggregate.decode.model_copy(update={"role": "prefill"}) if aggregate.decode else None
        )
        deployed_prefill = shape.idle() if shape else None
    return Plan(
        model=model.name,
        feasible=chosen.feasible,
        reason=reason,
        mode=request.mode,
        deployment=deployment,
        recommended=recommended,
        percentile=demand.percentile,
        requests_per_second=demand.rps,
        prefill=deployed_prefill,
        decode=chosen.decode,
        gpus=chosen.gpus,
        cost_per_hour_usd=chosen.cost_per_hour_usd,
        predicted_ttft_ms=chosen.predicted_ttft_ms,
        predicted_itl_ms=chosen.predicted_itl_ms,
        max_requests_per_second=chosen.max_requests_per_second,
        prompt_tokens_threshold=threshold,
        disaggregated=disaggregated,
        aggregated=aggregate,
        calibration_sources={name: c.source for name, c in calibrations.items()},
        rationale=rationale(request, model, deployment, recommended, disaggregated, aggregate, threshold),
    )


def _calibrations(request: PlanRequest, catalog: Catalog) -> dict[str, Calibration]:
    names = {catalog.gpu(n).name for n in (*request.prefill_gpus, *request.decode_gpus)}
    return {
        name: request.calibrations.get(name) or load_calibration(catalog.gpus[name], request.calibration_dir)
        for name in sorted(names)
    }


def _disaggregated(
    model: ModelShape,
    prefill: Outcome,
    decode: Outcome,
    request: PlanRequest,
    demand: Demand,
    handoff_ms_per_token: Callable[[Layout, Layout], float],
) -> DeploymentPlan:
    prefill_plan = decode_plan = None
    if isinstance(prefill, Sized):
        peer = decode.layout if isinstance(decode, Sized) else prefill.layout
        prefill_plan = role_plan(
            model, prefill, "prefill", request.prefill, demand, handoff_ms_per_token(prefill.layout, peer)
        )
    if isinstance(decode, Sized):
        peer = prefill.layout if isinstance(prefill, Sized) else decode.layout
        decode_plan = role_plan(
            model, decode, "decode", request.decode, demand, handoff_ms_per_token(peer, decode.layout)
        )
    reasons = [
        f"{name}: {o.reason}"
        for name, o in (("prefill", prefill), ("decode", decode))
        if isinstance(o, Failure)
    ]
    feasible = not reasons
    roles = [r for r in (prefill_plan, decode_plan) if r is not None and feasible]
    return DeploymentPlan(
        kind="Disaggregated",
        feasible=feasible,
        reason="; ".join(reasons) or None,
        prefill=prefill_plan,
        decode=decode_plan,
        gpus=sum(r.gpus for r in roles),
        cost_per_hour_usd=sum(r.cost_per_hour_usd for r in roles),
        predicted_ttft_ms=prefill_plan.predicted_ttft_ms if prefill_plan else None,
        predicted_itl_ms=decode_plan.predicted_itl_ms if decode_plan else None,
        max_requests_per_second=min(r.max_requests_per_second for r in roles) if roles else None,
    )


def _aggregated(model: ModelShape, outcome: Outcome, request: PlanRequest, demand: Demand) -> DeploymentPlan:
    if isinstance(outcome, Failure):
        return DeploymentPlan(kind="Aggregated", feasible=False, reason=outcome.reason)
    replicas = role_plan(model, outcome, "aggregated", request.decode, demand, 0.0)
    return DeploymentPlan(
        kind="Aggregated",
        feasible=True,
        decode=replicas,
        gpus=replicas.gpus,
        cost_per_hour_usd=replicas.cost_per_hour_usd,
        predicted_ttft_ms=replicas.predicted_ttft_ms,
        predicted_itl_ms=replicas.predicted_itl_ms,
        max_requests_per_second=replicas.max_requests_per_second,
    )


def _recommend(disaggregated: DeploymentPlan, aggregated: DeploymentPlan) -> Deployment | None:
    """Fewer GPUs win, then lower cost; on a tie aggregated serving, the simpler one."""
    feasible = [d for d in (aggregated, disaggregated) if d.feasible]
    if not feasible:
        return None
    return min(feasible, key=lambda d: (d.gpus, round(d.cost_per_hour_usd, 6))).kind


def _deployment(request: PlanRequest, recommended: Deployment | None) -> Deployment:
    if request.mode == DisaggregationMode.ALWAYS:
        return "Disaggregated"
    if request.mode == DisaggregationMode.NEVER or request.prefill.replicas == 0:
        return "Aggregated"
    return recommended or "Disaggregated"
