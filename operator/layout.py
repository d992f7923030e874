"""The resolved layout: what the builders render, with every automatic field filled.

The builders depend on this small model only, never on the planner's internals. ``resolve_layout``
is the one place where the plan and the user's pinned fields meet (pinned fields win).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from tandem.api import EngineTiming, InferencePoolSpec, KvConnector, PlanStatus, RolePlanStatus, RoleSpec
from tandem.api.spec import Toleration
from tandem.operator.naming import Role
from tandem.planner import Plan, RolePlan


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RoleLayout(_Frozen):
    """One engine role: its hardware, parallelism, replicas and how fast one instance runs."""

    role: Role
    gpu_type: str = Field(min_length=1)
    tensor_parallel: int = Field(ge=1)
    pipeline_parallel: int = Field(ge=1)
    replicas: int = Field(ge=0)
    gpus_per_node: int = Field(ge=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    timing: EngineTiming
    extra_args: tuple[str, ...] = ()
    resources: dict[str, dict[str, str]] | None = None

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def nodes_per_replica(self) -> int:
        """Nodes one instance spans: more than one only with pipeline stages on several nodes."""
        return math.ceil(self.gpus_per_replica / self.gpus_per_node)

    @property
    def gpus_per_pod(self) -> int:
        return self.gpus_per_replica // self.nodes_per_replica


class PoolLayout(_Frozen):
    """Both roles plus what the router and the KV handoff need."""

    prefill: RoleLayout
    decode: RoleLayout
    prompt_tokens_threshold: int | None = Field(default=None, ge=0)
    connector: KvConnector
    max_model_len: int | None = Field(default=None, ge=16)

    def role(self, role: Role) -> RoleLayout:
        return self.prefill if role is Role.PREFILL else self.decode

    def plan_status(self, planned: PlanStatus) -> PlanStatus:
        """The plan as deployed: the planner's figures with the layout's (pinned) shape on top."""

        def role(layout: RoleLayout, before: RolePlanStatus | None) -> RolePlanStatus | None:
            if before is None and layout.replicas == 0:
                return None
            return RolePlanStatus(
                gpu_type=layout.gpu_type,
                tensor_parallel=layout.tensor_parallel,
                pipeline_parallel=layout.pipeline_parallel,
                replicas=layout.replicas,
                gpus=layout.replicas * layout.gpus_per_replica,
                max_batch=layout.timing.max_num_seqs,
                kv_capacity_tokens=layout.timing.kv_capacity_tokens,
            )

        return planned.model_copy(
            update={
                "prefill": role(self.prefill, planned.prefill),
                "decode": role(self.decode, planned.decode),
                "prompt_tokens_threshold": self.prompt_tokens_threshold,
            }
        )


class LayoutError(ValueError):
    """The pinned and planned fields do not make a layout the cluster can run; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _role(spec: InferencePoolSpec, role: Role, planned: RolePlan | None, fallback: RolePlan) -> RoleLayout:
    pins = _pins(spec)[role]
    accelerator = spec.accelerator
    placement = accelerator.prefill if role is Role.PREFILL else accelerator.decode
    # A role the plan leaves out (aggregated serving) runs no replicas, shaped like the other.
    basis = planned or fallback
    layout = RoleLayout(
        role=role,
        gpu_type=placement.type if placement else basis.gpu_type,
        tensor_parallel=pins.tensor_parallel or basis.tensor_parallel,
        pipeline_parallel=pins.pipeline_parallel or basis.pipeline_parallel,
        replicas=pins.replicas if pins.replicas is not None else (planned.replicas if planned else 0),
        gpus_per_node=accelerator.gpus_per_node,
        node_selector=dict(placement.node_selector if placement else accelerator.node_selector),
        tolerations=tuple(placement.tolerations if placement else accelerator.tolerations),
        timing=basis.engine_timing,
        extra_args=tuple(pins.extra_args),
        resources=pins.resources,
    )
    field = f"spec.{role}"
    if layout.tensor_parallel > layout.gpus_per_node:
        raise LayoutError(
            f"{field}.tensorParallel",
            f"{layout.tensor_parallel} exceeds spec.accelerator.gpusPerNode={layout.gpus_per_node}; "
            "tensor parallelism stays within a node (add pipeline stages instead)",
        )
    nodes = layout.nodes_per_replica
    if nodes > 1 and (layout.gpus_per_replica % nodes or layout.gpus_per_pod % layout.tensor_parallel):
        raise LayoutError(
            f"{field}.pipelineParallel",
            f"{layout.pipeline_parallel} stages of TP{layout.tensor_parallel} do not split evenly over "
            f"{nodes} nodes of {layout.gpus_per_node} GPUs",
        )
    return layout


def _pins(spec: InferencePoolSpec) -> dict[Role, RoleSpec]:
    return {Role.PREFILL: spec.prefill, Role.DECODE: spec.decode}


def resolve_layout(spec: InferencePoolSpec, plan: Plan) -> PoolLayout:
    """The layout to deploy: the plan's choices with the user's pinned fields on top."""
    if plan.decode is None:
        raise LayoutError("spec.decode", "the plan has no decode role")
    prefill = _role(spec, Role.PREFILL, plan.prefill, plan.decode)
    decode = _role(spec, Role.DECODE, plan.decode, plan.decode)
    disaggregation = spec.disaggregation
    connector = KvConnector(disaggregation.kv_transfer.connector)
    if (
        connector is KvConnector.LMCACHE
        and prefill.replicas
        and prefill.tensor_parallel != decode.tensor_parallel
    ):
        how = {role: "pinned" if pins.tensor_parallel else "planned" for role, pins in _pins(spec).items()}
        raise LayoutError(
            "spec.prefill.tensorParallel",
            f"prefill TP{prefill.tensor_parallel} ({how[Role.PREFILL]}) differs from decode "
            f"TP{decode.tensor_parallel} ({how[Role.DECODE]}); LMCache keys KV chunks by TP rank, so both "
            "roles need one tensorParallel: pin spec.prefill.tensorParallel and spec.decode.tensorParallel",
        )
    pinned = disaggregation.prompt_tokens_threshold
    threshold = pinned if isinstance(pinned, int) else plan.prompt_tokens_threshold
    return PoolLayout(
        prefill=prefill,
        decode=decode,
        prompt_tokens_threshold=threshold,
        connector=connector,
        max_model_len=spec.model.max_model_len,
    )
