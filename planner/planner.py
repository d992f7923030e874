"""Planning: resolve the model and GPUs, size both deployments, pick one, explain it.

`plan(request)` is the entry point; `plan_pool(spec)` builds the request from an InferencePool spec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tandem.api import DisaggregationMode, InferencePoolSpec, SloSpec
from tandem.planner.aggregated import size_aggregated
from tandem.planner.calibration import Calibration, load_calibration
from tandem.planner.catalog import Catalog, load_catalog
from tandem.planner.demand import Demand
from tandem.planner.handoff import Handoff
from tandem.planner.hf_config import shape_from_hf_config
from tandem.planner.layouts import Layout, candidate_layouts, for_phase
from tandem.planner.model import ModelShape, shape_from_architecture
from tandem.planner.parallelism import explain, is_wide, size_widening
from tandem.planner.pd_buffer import plan_decoder_buffer
from tandem.planner.plan import Deployment, DeploymentPlan, Plan, Role
from tandem.planner.rationale import rationale
from tandem.planner.request import GpuBudget, PlanRequest, RolePins
from tandem.planner.roles import role_plan
from tandem.planner.sizing import Failure, Outcome, Sized, size_decode, size_prefill
from tandem.planner.threshold import prompt_tokens_threshold


def plan_pool(
    spec: InferencePoolSpec, catalog: Catalog | None = None, limit: GpuBudget | None = None
) -> Plan:
    """The plan for an InferencePool spec (what the operator calls, with its GPU limit per pool)."""
    return plan(PlanRequest.from_pool_spec(spec, limit), catalog)


def pool_model(spec: InferencePoolSpec, catalog: Catalog | None = None) -> ModelShape:
    """The model a pool is planned for, as its engines serve it (what the router sizes handoffs by).
    Raises PlannerError (or pydantic's ValidationError for an inconsistent architecture)."""
    return resolve_model(PlanRequest.from_pool_spec(spec), catalog or load_catalog())


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
    demand = Demand.from_spec(
        request.workload, request.slo, request.offload, request.max_model_len or model.max_context_tokens
    )
    calibrations = calibrations_for(request, catalog)
    sizings = _Sizings()
    prefill, decode, aggregated = _size_roles(request, catalog, model, demand, calibrations, sizings)
    decode, pd_buffer = _decoder_buffer(model, prefill, decode, request, demand)
    handoff = Handoff(model, decode, request.kv_link_gbps)
    disaggregated = _within_budget(
        _disaggregated(model, prefill, decode, request, demand, handoff, pd_buffer), request
    )
    aggregate = _within_budget(_aggregated(model, aggregated, request, demand), request)
    recommended = recommend(disaggregated, aggregate, request.slo, request.workload.requests_per_second)
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
        threshold = request.prompt_tokens_threshold
        if threshold is None:
            threshold = prompt_tokens_threshold(model, prefill, decode, demand, handoff.transfer_ms)
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
        gpu_budget=request.gpu_budget,
        rationale=rationale(
            request,
            model,
            deployment,
            recommended,
            disaggregated,
            aggregate,
            threshold,
            _parallelism(
                request,
                catalog,
                model,
                demand,
                calibrations,
                deployment,
                (prefill, decode, aggregated),
                sizings,
            ),
        ),
    )


def _parallelism(
    request: PlanRequest,
    catalog: Catalog,
    model: ModelShape,
    demand: Demand,
    calibrations: dict[str, Calibration],
    deployment: Deployment,
    sized: tuple[Outcome, Outcome, Outcome],
    sizings: _Sizings,
) -> str:
    """For an MoE model with DP/EP layouts searched: each deployed role against its best
    tensor-parallel-only sizing (`sizings` holds those the plan's own search made)."""
    if not model.is_moe or request.no_expert_parallel is not None:
        return ""
    roles = ((0, "prefill"), (1, "decode")) if deployment == "Disaggregated" else ((2, "aggregated"),)
    tp_only = sized  # read only where the chosen layout is itself tensor-parallel
    deployed = [sized[i] for i, _ in roles]
    if any(isinstance(o, Sized) and is_wide(o.layout) for o in deployed):
        narrow = request.model_copy(update={"expert_parallel": False})
        tp_only = _size_roles(narrow, catalog, model, demand, calibrations, sizings)
    return explain([(name, sized[i], tp_only[i]) for i, name in roles], model.is_mla)


def _size_roles(
    request: PlanRequest,
    catalog: Catalog,
    model: ModelShape,
    demand: Demand,
    calibrations: dict[str, Calibration],
    sizings: _Sizings,
) -> tuple[Outcome, Outcome, Outcome]:
    """Prefill, decode and aggregated replicas, each sized on its best layout (or why not), through
    `sizings`."""
    limit = request.max_model_len or model.max_context_tokens
    if limit and demand.prompt.mean + demand.output_tokens > limit:
        too_long = Failure(
            f"requests of {demand.prompt.mean:.0f} + {demand.output_tokens:.0f} tokens exceed the "
            f"{limit}-token context of {model.name}"
        )
        return too_long, too_long, too_long

    # vLLM starts an engine only with KV room for one sequence of its context (--max-model-len),
    # and refuses longer requests: vllm/v1/core/kv_cache_planning.py:66-87 (_check_enough_kv_cache_memory).
    min_kv_tokens = limit or demand.longest_request

    def layouts(gpu_names: Sequence[str], pins: RolePins) -> list[Layout] | Failure:
        found: list[Layout] = []
        reasons: list[str] = []
        for name in gpu_names:
            gpu = catalog.gpu(name)
            more, reason = candidate_layouts(
                model,
                gpu,
                calibrations[gpu.name],
                request.gpus_per_node,
                pins,
                min_kv_tokens,
                single_stage=request.layout_rules.single_stage,
                expert_parallel=request.no_expert_parallel,
                max_gpus=request.gpu_budget.gpus if request.gpu_budget else None,
            )
            found += more
            reasons += [reason] if reason else []
        return found or Failure("; ".join(reasons))

    decode_layouts = layouts(request.decode_gpus, request.decode)
    prefill_layouts = (
        decode_layouts
        if (request.prefill_gpus, request.prefill) == (request.decode_gpus, request.decode)
        else layouts(request.prefill_gpus, request.prefill)
    )
    if isinstance(decode_layouts, Failure):
        decode: Outcome = decode_layouts
        aggregated: Outcome = decode_layouts
    else:
        decode = size_widening(
            lambda ls: sizings.of("decode", ls, None, lambda: size_decode(model, ls, demand, request.decode)),
            for_phase(decode_layouts, "decode"),
        )
        aggregated = size_widening(
            lambda ls: sizings.of(
                "aggregated", ls, None, lambda: size_aggregated(model, ls, demand, request.decode)
            ),
            for_phase(decode_layouts, "aggregated"),
        )
    if isinstance(prefill_layouts, Failure):
        return prefill_layouts, decode, aggregated
    handoff = Handoff(model, decode, request.kv_link_gbps)
    prefill_layouts = for_phase(prefill_layouts, "prefill")
    prefill = size_widening(
        lambda ls: sizings.of(
            "prefill", ls, handoff, lambda: size_prefill(model, ls, demand, request.prefill, handoff)
        ),
        prefill_layouts,
    )
    same_tp = request.layout_rules.same_tensor_parallel
    if same_tp is not None and not isinstance(decode_layouts, Failure):
        prefill, decode = _same_tensor_parallel(
            model, prefill_layouts, decode_layouts, demand, request, (prefill, decode), same_tp
        )
    return prefill, decode, aggregated


@dataclass
class _Sizings:
    """The roles one plan has sized, by role, layouts and what else the sizing reads (the handoff,
    for prefill): the parallelism rationale sizes the tensor-parallel layouts again, as the search
    did. The request's pins per role, the model and the demand are the plan's own."""

    known: list[tuple[Role, list[Layout], object, Outcome]] = field(default_factory=list)

    def of(
        self, role: Role, layouts: Sequence[Layout], given: object, size: Callable[[], Outcome]
    ) -> Outcome:
        for known_role, known_layouts, known_given, outcome in self.known:
            if known_role == role and known_given == given and known_layouts == list(layouts):
                return outcome
        outcome = size()
        self.known.append((role, list(layouts), given, outcome))
        return outcome


def _same_tensor_parallel(
    model: ModelShape,
    prefill_layouts: Sequence[Layout],
    decode_layouts: Sequence[Layout],
    demand: Demand,
    request: PlanRequest,
    free: tuple[Outcome, Outcome],
    why: str,
) -> tuple[Outcome, Outcome]:
    """Prefill and decode on one TP size (the connector needs it: `why`), the pair with the fewest
    GPUs, then the lowest cost. `free` is each role sized on its own: kept when it already agrees."""
    free_prefill, free_decode = free
    agree = (
        isinstance(free_prefill, Sized)
        and isinstance(free_decode, Sized)
        and free_prefill.layout.tp == free_decode.layout.tp
    )
    pins = {request.prefill.tensor_parallel, request.decode.tensor_parallel}
    if agree or (None not in pins and len(pins) == 2):
        return free  # two different pins contradict the spec itself: its validator reports that
    best: tuple[tuple[int, float], Sized, Sized] | None = None
    for tp in sorted({layout.tp for layout in decode_layouts} & {layout.tp for layout in prefill_layouts}):
        decode = size_decode(model, [x for x in decode_layouts if x.tp == tp], demand, request.decode)
        if not isinstance(decode, Sized):
            continue
        handoff = Handoff(model, decode, request.kv_link_gbps)
        prefill = size_prefill(
            model, [x for x in prefill_layouts if x.tp == tp], demand, request.prefill, handoff
        )
        if not isinstance(prefill, Sized):
            continue
        pair = (prefill, decode)
        gpus = sum(r.replicas * r.layout.gpus for r in pair)
        usd = sum(r.replicas * r.layout.gpus * r.layout.gpu.price_per_hour_usd for r in pair)
        if best is None or (gpus, usd) < best[0]:
            best = ((gpus, usd), prefill, decode)
    if best is not None:
        return best[1], best[2]
    return Failure(f"{why}, and no common TP size meets both roles' targets"), free_decode


def calibrations_for(request: PlanRequest, catalog: Catalog) -> dict[str, Calibration]:
    """Each GPU's calibration; the request's memory fraction, if any, over every one of them."""
    names = {catalog.gpu(n).name for n in (*request.prefill_gpus, *request.decode_gpus)}
    calibrations = {
        name: request.calibrations.get(name) or load_calibration(catalog.gpus[name], request.calibration_dir)
        for name in sorted(names)
    }
    if request.gpu_memory_utilization is None:
        return calibrations
    override = {"gpu_memory_utilization": request.gpu_memory_utilization}
    return {name: c.model_copy(update=override) for name, c in calibrations.items()}


def _within_budget(deployment: DeploymentPlan, request: PlanRequest) -> DeploymentPlan:
    """The deployment, infeasible if it takes more GPUs than the request's budget."""
    budget = request.gpu_budget
    if budget is None or not deployment.feasible or deployment.gpus <= budget.gpus:
        return deployment
    reason = f"the pool needs {deployment.gpus} GPUs, over the budget of {budget.gpus} ({budget.source})"
    return deployment.model_copy(update={"feasible": False, "reason": reason})


def _decoder_buffer(
    model: ModelShape, prefill: Outcome, decode: Outcome, request: PlanRequest, demand: Demand
) -> tuple[Outcome, int | None]:
    """The decode role and its ranks' PD buffer, where the connector has one (planner/pd_buffer.py);
    the decode role grows, or fails, where its buffers cannot take the rate."""
    if not request.layout_rules.decoder_pd_buffer:
        return decode, None
    if not isinstance(prefill, Sized) or not isinstance(decode, Sized):
        return decode, None
    sized = plan_decoder_buffer(
        model,
        prefill,
        decode,
        demand,
        request.decode,
        request.pd_chunk_tokens,
        request.decoder_buffer_bytes,
    )
    return (sized, None) if isinstance(sized, Failure) else sized


def _disaggregated(
    model: ModelShape,
    prefill: Outcome,
    decode: Outcome,
    request: PlanRequest,
    demand: Demand,
    handoff: Handoff,
    pd_buffer_bytes: int | None,
) -> DeploymentPlan:
    prefill_plan = decode_plan = None
    # Both roles carry the handoff's cost per token (from the prefill layout, or the decode one
    # when prefill could not be sized).
    sized = [o.layout for o in (prefill, decode) if isinstance(o, Sized)]
    per_token = handoff.ms_per_token(sized[0]) if sized else 0.0
    if isinstance(prefill, Sized):
        prefill_plan = role_plan(model, prefill, "prefill", request.prefill, demand, per_token)
    if isinstance(decode, Sized):
        decode_plan = role_plan(model, decode, "decode", request.decode, demand, per_token, pd_buffer_bytes)
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


def recommend(
    disaggregated: DeploymentPlan, aggregated: DeploymentPlan, slo: SloSpec, requests_per_second: float
) -> Deployment | None:
    """Fewer GPUs win, then lower cost; at equal cost more SLO headroom (the spare share of the
    tightest margin: TTFT, ITL, or the load against the most the deployment sustains), and where
    that ties too aggregated serving, the simpler one."""
    feasible = [d for d in (aggregated, disaggregated) if d.feasible]
    if not feasible:
        return None
    return min(feasible, key=lambda d: (*d.cost_key, -d.slo_headroom(slo, requests_per_second).spare)).kind


def _deployment(request: PlanRequest, recommended: Deployment | None) -> Deployment:
    if request.mode == DisaggregationMode.ALWAYS:
        return "Disaggregated"
    if request.mode == DisaggregationMode.NEVER or request.prefill.replicas == 0:
        return "Aggregated"
    return recommended or "Disaggregated"
