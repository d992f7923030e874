"""The planner as the autoscaler asks it (``decision.PlanView``): the pool's spec re-planned for an
observed workload, on the pool's own layout. Pure, given the planner.

"The pool's layout" is what runs: each role's tensor, pipeline and data parallelism, its expert
parallelism and the deployment (disaggregated or aggregated) are pinned to those of the current
plan, so only replicas float. A
plan of the spec with the observed workload and only the user's own pins may prefer another
layout: that is a recommendation, shown in status and never applied by the autoscaler.
"""

from __future__ import annotations

from tandem.api import DisaggregationMode, InferencePoolSpec, RoleSpec, WorkloadSpec
from tandem.api.autoscaling import LayoutRecommendation, RoleShape
from tandem.operator.autoscale.decision import Prediction, Replicas, RoleNeed, Sizing
from tandem.operator.decide import Planner
from tandem.operator.layout import PoolLayout, RoleLayout
from tandem.planner import GpuBudget, Plan, PlannerError, RolePlan


def _need(role: RolePlan | None) -> RoleNeed | None:
    if role is None or role.replicas == 0:
        return None
    return RoleNeed(replicas=role.replicas, replica_rps=role.max_requests_per_second / role.replicas)


def _shape(role: RolePlan | None) -> RoleShape | None:
    if role is None or role.replicas == 0:
        return None
    return RoleShape(
        gpu_type=role.gpu_type,
        tensor_parallel=role.tensor_parallel,
        pipeline_parallel=role.pipeline_parallel,
        replicas=role.replicas,
    )


def _gpus(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


def _describe(deployment: str, prefill: RoleShape | None, decode: RoleShape | None) -> str:
    roles = [
        f"{name} {shape.replicas}x TP{shape.tensor_parallel}"
        + (f"xPP{shape.pipeline_parallel}" if shape.pipeline_parallel > 1 else "")
        + f" on {shape.gpu_type}"
        for name, shape in (("prefill", prefill), ("decode", decode))
        if shape is not None
    ]
    return f"{deployment}: {', '.join(roles)}"


class PoolPlans:
    """``PlanView`` for one pool: its spec, the plan it runs (``plan``, for the spec's declared
    workload) and the layout resolved from it."""

    def __init__(self, spec: InferencePoolSpec, plan: Plan, layout: PoolLayout, planner: Planner) -> None:
        self._spec = spec
        self._plan = plan
        self._layout = layout
        self._planner = planner

    @property
    def disaggregated(self) -> bool:
        return self._plan.deployment == "Disaggregated"

    @property
    def gpus_per_replica(self) -> Replicas:
        layout = self._layout
        return Replicas(layout.prefill.gpus_per_replica, layout.decode.gpus_per_replica)

    @property
    def budget(self) -> GpuBudget | None:
        return self._plan.gpu_budget

    def _on_layout(self, load: WorkloadSpec, replicas: Replicas | None = None) -> Plan:
        """The plan of the load on the pool's layout, with replicas free or pinned to ``replicas``."""

        def pins(own: RoleSpec, layout: RoleLayout, count: int | None) -> RoleSpec:
            return own.model_copy(
                update={
                    "tensor_parallel": layout.tensor_parallel,
                    "pipeline_parallel": layout.pipeline_parallel,
                    "data_parallel": layout.data_parallel,
                    "expert_parallel": layout.expert_parallel,
                    "replicas": count,
                }
            )

        mode = DisaggregationMode.ALWAYS if self.disaggregated else DisaggregationMode.NEVER
        spec = self._spec
        layout = self._layout
        disaggregation = spec.disaggregation.model_copy(update={"mode": mode})
        update = {
            "workload": load,
            "disaggregation": disaggregation,
            "prefill": pins(
                spec.prefill, layout.prefill, replicas.prefill if replicas and self.disaggregated else None
            ),
            "decode": pins(spec.decode, layout.decode, replicas.decode if replicas else None),
        }
        return self._planner(spec.model_copy(update=update))

    def size(self, load: WorkloadSpec) -> Sizing | str:
        try:
            planned = self._on_layout(load)
        except PlannerError as exc:
            return str(exc)
        decode = _need(planned.decode)
        prefill = _need(planned.prefill) if self.disaggregated else None
        if decode is None or (self.disaggregated and prefill is None):
            return planned.reason or "no plan"
        return Sizing(prefill=prefill, decode=decode)

    def predict(self, load: WorkloadSpec, replicas: Replicas) -> Prediction | None:
        try:
            planned = self._on_layout(load, replicas)
        except PlannerError:
            return None
        if not planned.feasible:
            return None
        return Prediction(ttft_ms=planned.predicted_ttft_ms, itl_ms=planned.predicted_itl_ms)

    def _current_shape(self) -> tuple[str, tuple[tuple[str, int, int], ...]]:
        layout = self._layout
        roles = [layout.prefill, layout.decode] if self.disaggregated else [layout.decode]
        shape = tuple((role.gpu_type, role.tensor_parallel, role.pipeline_parallel) for role in roles)
        return self._plan.deployment, shape

    def recommend(self, load: WorkloadSpec) -> LayoutRecommendation | None:
        """The planner's own choice for the load, where it differs from the pool's layout and either
        takes fewer GPUs than the pool's layout would need or the pool's layout cannot serve it."""
        try:
            free = self._planner(self._spec.model_copy(update={"workload": load}))
            here = self._on_layout(load)
        except PlannerError:
            return None
        if not free.feasible or free.decode is None:
            return None
        deployed = [free.prefill, free.decode] if free.deployment == "Disaggregated" else [free.decode]
        shape = tuple(
            (role.gpu_type, role.tensor_parallel, role.pipeline_parallel) for role in deployed if role
        )
        if (free.deployment, shape) == self._current_shape():
            return None
        if here.decode is not None and (not self.disaggregated or here.prefill is not None):
            if free.gpus >= here.gpus:
                return None
            why = f"{_gpus(free.gpus)} instead of the {_gpus(here.gpus)} the current layout needs"
        else:
            why = "the current layout cannot meet the targets"
        prefill = _shape(free.prefill) if free.deployment == "Disaggregated" else None
        decode = _shape(free.decode)
        described = _describe(free.deployment, prefill, decode)
        return LayoutRecommendation(
            message=f"for the observed traffic the planner would deploy {described} ({why}); the "
            "autoscaler keeps the layout: set spec.workload to the observed traffic to re-plan",
            deployment=free.deployment,
            prefill=prefill,
            decode=decode,
        )
