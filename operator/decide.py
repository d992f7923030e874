"""From a pool object to what should exist: validate, plan, resolve, build. Pure.

The outcome is either the children to apply or a ``Problem`` whose message names the field at
fault; an unusable pool is a status, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from tandem.api import AutoscalingMode, InferencePoolSpec, PlanStatus
from tandem.api.spec import MAX_REPLICAS
from tandem.operator.build import Manifest, SharedRouter, desired_objects, missing_capability
from tandem.operator.capabilities import Capabilities
from tandem.operator.gateway_api import GatewayPlan, gateway_plan
from tandem.operator.layout import LayoutError, PoolLayout, Scaling, resolve_layout
from tandem.operator.naming import PoolRef, Role, pool_name_problem
from tandem.operator.placement import GFD_PRODUCT_LABEL
from tandem.operator.settings import Images
from tandem.operator.shared_router import shared_router
from tandem.operator.status import Problem
from tandem.operator.validate import spec_problems
from tandem.planner import (
    CalibrationError,
    GpuBudget,
    ModelConfigError,
    Plan,
    PlannerError,
    UnknownGpuError,
    UnknownModelError,
)

INVALID_SPEC = "InvalidSpec"
INFEASIBLE = "Infeasible"
LWS_MISSING = "LeaderWorkerSetMissing"


Planner = Callable[[InferencePoolSpec], Plan]
# The spec field a planner error is about.
_ERROR_FIELDS: tuple[tuple[type[PlannerError], str], ...] = (
    (UnknownModelError, "spec.model.name"),
    (ModelConfigError, "spec.model.architecture"),
    (UnknownGpuError, "spec.accelerator.type"),
    (CalibrationError, "spec.accelerator.type"),
)


def planner_error_message(error: PlannerError) -> str:
    field = next((name for kind, name in _ERROR_FIELDS if isinstance(error, kind)), "spec")
    return f"{field}: {error}"


@dataclass(frozen=True)
class Decision:
    pool: PoolRef
    generation: int
    plan: PlanStatus | None = None
    layout: PoolLayout | None = None
    objects: list[Manifest] | None = None  # None: nothing to apply (see problem)
    problem: Problem | None = None
    desired: dict[str, int] | None = None  # replicas per component, when deployable
    endpoint: str | None = None
    gateway: GatewayPlan = None  # what the GatewayAccepted condition comes from, when deployable
    spec: InferencePoolSpec | None = None  # the spec, once valid


def validation_message(error: ValidationError, prefix: str) -> str:
    """pydantic's errors as "spec.field.path: message; ..." (locations in the wire's camelCase)."""
    problems = []
    for item in error.errors():
        where = ".".join([prefix, *(str(part) for part in item["loc"])])
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def bounds_problem(layout: PoolLayout, budget: GpuBudget | None) -> str | None:
    """Why the layout (pins over the plan) is beyond the pool's bounds, naming the limit; or None."""
    for role in (layout.prefill, layout.decode):
        if role.replicas > MAX_REPLICAS:
            return f"spec.{role.role}.replicas: {role.replicas} planned, over the maximum of {MAX_REPLICAS}"
    gpus = sum(role.replicas * role.gpus_per_replica for role in (layout.prefill, layout.decode))
    if budget is not None and gpus > budget.gpus:
        shapes = ", ".join(
            f"{role.role} {role.replicas} x {role.gpus_per_replica}"
            for role in (layout.prefill, layout.decode)
        )
        return f"{budget.source}: the pool needs {gpus} GPUs ({shapes}), over the budget of {budget.gpus}"
    return None


def pool_ref(body: Mapping[str, Any]) -> PoolRef:
    meta = body["metadata"]
    return PoolRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def decide(
    body: Mapping[str, Any],
    caps: Capabilities,
    images: Images,
    planner: Planner,
    gpu_label: str = GFD_PRODUCT_LABEL,
    *,
    network_policy: bool = False,
    scaled: Scaling | None = None,
    sharing: Iterable[Mapping[str, Any]] = (),
) -> Decision:
    """``scaled``: the autoscaler's replicas, over the plan's and the pins (``spec.autoscaling``);
    ``sharing``: the stored pools that name the same shared router (``spec.router.shared``)."""
    pool = pool_ref(body)
    generation = int(body["metadata"].get("generation", 0))

    parsed: InferencePoolSpec | None = None

    def blocked(reason: str, message: str, plan: PlanStatus | None = None, planned: bool = False) -> Decision:
        problem = Problem(reason, message, planned)
        return Decision(pool, generation, plan=plan, problem=problem, spec=parsed)

    name_problem = pool_name_problem(pool.name)
    if name_problem is not None:
        return blocked(INVALID_SPEC, f"metadata.name: {name_problem}")
    try:
        spec = InferencePoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return blocked(INVALID_SPEC, validation_message(exc, "spec"))
    problems = spec_problems(spec)
    parsed = spec if not problems else None
    if problems:
        return blocked(INVALID_SPEC, "; ".join(problems))
    pool = replace(pool, shared_router=spec.router.shared)
    try:
        planned = planner(spec)
    except PlannerError as exc:
        return blocked(INVALID_SPEC, planner_error_message(exc))
    if not planned.feasible:
        return blocked(INFEASIBLE, planned.reason or "no layout meets the SLO", planned.to_status())
    scaled = scaled or Scaling()
    if spec.autoscaling.mode == AutoscalingMode.EXTERNAL:
        scaled = scaled.model_copy(update={"external": frozenset(Role)})
    try:
        layout = resolve_layout(spec, planned, gpu_label, scaled)
        # The plan as planned: the autoscaler's counts show in status.autoscaling and the roles'.
        shown = resolve_layout(spec, planned, gpu_label) if scaled.replicas else layout
    except LayoutError as exc:
        return blocked(INVALID_SPEC, str(exc), planned.to_status())
    plan = shown.plan_status(planned.to_status())
    beyond = bounds_problem(layout, planned.gpu_budget)
    if beyond is not None:
        return blocked(INFEASIBLE, beyond, plan)
    missing = missing_capability(spec, layout, caps)
    if missing is not None:
        return blocked(LWS_MISSING, missing, plan, planned=True)
    shared: SharedRouter | None = None
    if pool.shared_router is not None:
        found = shared_router(pool, spec, sharing)
        if isinstance(found, Problem):
            return blocked(found.reason, found.message, plan, planned=True)
        shared = found
    objects = desired_objects(pool, spec, layout, images, caps, network_policy=network_policy, shared=shared)
    return Decision(
        pool,
        generation,
        plan=plan,
        layout=layout,
        objects=objects,
        desired={
            "prefill": layout.prefill.replicas,
            "decode": layout.decode.replicas,
            "router": spec.router.replicas,
        },
        endpoint=f"http://{pool.router_host}:{spec.router.service.port}/v1",
        gateway=gateway_plan(spec, caps, objects),
        spec=spec,
    )
