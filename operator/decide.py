"""From a pool object to what should exist: validate, plan, resolve, build. Pure.

The outcome is either the children to apply or a ``Problem`` whose message names the field at
fault; an unusable pool is a status, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tandem.api import InferencePoolSpec, PlanStatus
from tandem.operator.build import Manifest, desired_objects, missing_capability
from tandem.operator.capabilities import Capabilities
from tandem.operator.layout import LayoutError, PoolLayout, resolve_layout
from tandem.operator.naming import PoolRef, pool_name_problem
from tandem.operator.settings import Images
from tandem.operator.status import Problem
from tandem.planner import (
    CalibrationError,
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


def validation_message(error: ValidationError, prefix: str) -> str:
    """pydantic's errors as "spec.field.path: message; ..." (locations in the wire's camelCase)."""
    problems = []
    for item in error.errors():
        where = ".".join([prefix, *(str(part) for part in item["loc"])])
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def pool_ref(body: Mapping[str, Any]) -> PoolRef:
    meta = body["metadata"]
    return PoolRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def decide(body: Mapping[str, Any], caps: Capabilities, images: Images, planner: Planner) -> Decision:
    pool = pool_ref(body)
    generation = int(body["metadata"].get("generation", 0))

    def blocked(reason: str, message: str, plan: PlanStatus | None = None, planned: bool = False) -> Decision:
        return Decision(pool, generation, plan=plan, problem=Problem(reason, message, planned))

    name_problem = pool_name_problem(pool.name)
    if name_problem is not None:
        return blocked(INVALID_SPEC, f"metadata.name: {name_problem}")
    try:
        spec = InferencePoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return blocked(INVALID_SPEC, validation_message(exc, "spec"))
    try:
        planned = planner(spec)
    except PlannerError as exc:
        return blocked(INVALID_SPEC, planner_error_message(exc))
    if not planned.feasible:
        return blocked(INFEASIBLE, planned.reason or "no layout meets the SLO", planned.to_status())
    try:
        layout = resolve_layout(spec, planned)
    except LayoutError as exc:
        return blocked(INVALID_SPEC, str(exc), planned.to_status())
    plan = layout.plan_status(planned.to_status())
    missing = missing_capability(spec, layout, caps)
    if missing is not None:
        return blocked(LWS_MISSING, missing, plan, planned=True)
    return Decision(
        pool,
        generation,
        plan=plan,
        layout=layout,
        objects=desired_objects(pool, spec, layout, images, caps),
        desired={
            "prefill": layout.prefill.replicas,
            "decode": layout.decode.replicas,
            "router": spec.router.replicas,
        },
        endpoint=f"http://{pool.router_host}:{spec.router.service.port}/v1",
    )
