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
from tandem.operator.placement import GFD_PRODUCT_LABEL, role_placement
from tandem.planner import Plan, RolePlan
from tandem.planner.connectors import LAYOUT_RULES


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RoleLayout(_Frozen):
    """One engine role: its hardware, parallelism, replicas and how fast one instance runs."""

    role: Role
    gpu_type: str = Field(min_length=1)
    tensor_parallel: int = Field(ge=1)
    pipeline_parallel: int = Field(ge=1)
    data_parallel: int = Field(default=1, ge=1, description="DP ranks (engines) of one replica.")
    expert_parallel: bool = Field(default=False, description="Routed experts whole per GPU over DP x TP.")
    all2all_backend: str | None = Field(default=None, description="The plan's --all2all-backend.")
    replicas: int = Field(ge=0)
    gpus_per_node: int = Field(ge=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    timing: EngineTiming
    gpu_memory_utilization: float = Field(gt=0, le=1, description="The plan's, so KV capacity agrees.")
    pd_buffer_bytes: int | None = Field(default=None, description="Decoders: the plan's PD buffer per rank.")
    extra_args: tuple[str, ...] = ()
    resources: dict[str, dict[str, str]] | None = None
    external_replicas: bool = Field(
        default=False, description="An HPA or KEDA sets the replicas: the workload leaves them out."
    )

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel * self.data_parallel

    @property
    def nodes_per_replica(self) -> int:
        """Nodes one instance spans: more than one with pipeline stages or DP ranks on several nodes."""
        return math.ceil(self.gpus_per_replica / self.gpus_per_node)

    @property
    def gpus_per_pod(self) -> int:
        return self.gpus_per_replica // self.nodes_per_replica

    @property
    def data_parallel_per_pod(self) -> int:
        """DP ranks on one node of the replica (vLLM's --data-parallel-size-local there); 1 where
        one rank spans the nodes (pipeline stages)."""
        return max(1, self.data_parallel // self.nodes_per_replica)


class PoolLayout(_Frozen):
    """Both roles plus what the router and the KV handoff need."""

    prefill: RoleLayout
    decode: RoleLayout
    prompt_tokens_threshold: int | None = Field(default=None, ge=0)
    connector: KvConnector
    max_model_len: int | None = Field(default=None, ge=16)
    hands_off: bool = Field(
        description="The pool runs prefillers (the plan deploys some, or spec.prefill.replicas pins some), "
        "so handoffs may notify its router; the autoscaler's replicas, to 0 and back, leave it."
    )

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
                data_parallel=layout.data_parallel,
                expert_parallel=layout.expert_parallel,
                replicas=layout.replicas,
                gpus=layout.replicas * layout.gpus_per_replica,
                max_batch=layout.timing.max_num_seqs,
                kv_capacity_tokens=layout.timing.kv_capacity_tokens,
                engine_timing=layout.timing,
                pd_buffer_bytes=layout.pd_buffer_bytes,
            )

        return planned.model_copy(
            update={
                "prefill": role(self.prefill, planned.prefill),
                "decode": role(self.decode, planned.decode),
                "prompt_tokens_threshold": self.prompt_tokens_threshold,
            }
        )


class Scaling(_Frozen):
    """What the autoscaler says about replicas: its counts per role, and the roles whose replicas
    an HPA or KEDA sets (``spec.autoscaling``)."""

    replicas: dict[Role, int] = Field(default_factory=dict)
    external: frozenset[Role] = frozenset()


class LayoutError(ValueError):
    """The pinned and planned fields do not make a layout the cluster can run; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _role(
    spec: InferencePoolSpec,
    role: Role,
    planned: RolePlan | None,
    fallback: RolePlan,
    gpu_label: str,
    scaled: Scaling,
) -> RoleLayout:
    pins = _pins(spec)[role]
    accelerator = spec.accelerator
    placement = accelerator.prefill if role is Role.PREFILL else accelerator.decode
    # A role the plan leaves out (aggregated serving) runs no replicas, shaped like the other.
    basis = planned or fallback
    node_selector, tolerations = role_placement(spec, role, basis.gpu_device, gpu_label)
    layout = RoleLayout(
        role=role,
        # The catalog's name for a planned role (a placement may name it by an alias).
        gpu_type=basis.gpu_type if planned or not placement else placement.type,
        tensor_parallel=pins.tensor_parallel or basis.tensor_parallel,
        pipeline_parallel=pins.pipeline_parallel or basis.pipeline_parallel,
        data_parallel=basis.data_parallel,
        expert_parallel=basis.expert_parallel,
        all2all_backend=basis.all2all_backend,
        replicas=_replicas(role, pins, planned, scaled),
        gpus_per_node=accelerator.gpus_per_node,
        node_selector=node_selector,
        tolerations=tolerations,
        timing=basis.engine_timing,
        gpu_memory_utilization=basis.gpu_memory_utilization,
        pd_buffer_bytes=planned.pd_buffer_bytes if planned else None,
        extra_args=tuple(pins.extra_args),
        resources=pins.resources,
        external_replicas=role in scaled.external,
    )
    field = f"spec.{role}"
    if layout.tensor_parallel > layout.gpus_per_node:
        raise LayoutError(
            f"{field}.tensorParallel",
            f"{layout.tensor_parallel} exceeds spec.accelerator.gpusPerNode={layout.gpus_per_node}; "
            "tensor parallelism stays within a node (add pipeline stages instead)",
        )
    nodes = layout.nodes_per_replica
    if layout.data_parallel > 1:
        _check_data_parallel(spec, layout, field)
    elif nodes > 1 and (layout.gpus_per_replica % nodes or layout.gpus_per_pod % layout.tensor_parallel):
        raise LayoutError(
            f"{field}.pipelineParallel",
            f"{layout.pipeline_parallel} stages of TP{layout.tensor_parallel} do not split evenly over "
            f"{nodes} nodes of {layout.gpus_per_node} GPUs",
        )
    return layout


def _check_data_parallel(spec: InferencePoolSpec, layout: RoleLayout, field: str) -> None:
    """A planned DP replica the pins or the connector cannot run: DP ranks are one pipeline stage
    each, whole on a node, as many on every node; and the connector must take DP ranks."""
    dp, tp, nodes = layout.data_parallel, layout.tensor_parallel, layout.nodes_per_replica
    shape = f"the plan's DP={dp} x TP{tp} replica"
    if layout.pipeline_parallel > 1:
        raise LayoutError(
            f"{field}.pipelineParallel", f"{shape} takes no pipeline stages (vLLM's DP ranks are one stage)"
        )
    if dp % nodes or layout.data_parallel_per_pod * tp != layout.gpus_per_pod:
        raise LayoutError(
            f"{field}.tensorParallel",
            f"{shape} does not split into whole DP ranks over {nodes} nodes of {layout.gpus_per_node} GPUs",
        )
    no_dp = LAYOUT_RULES[spec.disaggregation.connector].no_data_parallel
    if no_dp is not None:
        raise LayoutError("spec.disaggregation.kvTransfer.connector", f"{shape}: {no_dp}")


def _replicas(role: Role, pins: RoleSpec, planned: RolePlan | None, scaled: Scaling) -> int:
    """The autoscaler's count, else the pinned one, else the plan's (0 for a role it leaves out)."""
    if role in scaled.replicas:
        return scaled.replicas[role]
    if pins.replicas is not None:
        return pins.replicas
    return planned.replicas if planned else 0


def _pins(spec: InferencePoolSpec) -> dict[Role, RoleSpec]:
    return {Role.PREFILL: spec.prefill, Role.DECODE: spec.decode}


def resolve_layout(
    spec: InferencePoolSpec,
    plan: Plan,
    gpu_label: str = GFD_PRODUCT_LABEL,
    scaled: Scaling | None = None,
) -> PoolLayout:
    """The layout to deploy: the plan's choices with the user's pinned fields on top, and the
    autoscaler's replicas (``scaled``) over both; engine pods select their GPU type by the node
    label ``gpu_label`` (empty: not at all)."""
    if plan.decode is None:
        raise LayoutError("spec.decode", "the plan has no decode role")
    scaled = scaled or Scaling()
    prefill = _role(spec, Role.PREFILL, plan.prefill, plan.decode, gpu_label, scaled)
    decode = _role(spec, Role.DECODE, plan.decode, plan.decode, gpu_label, scaled)
    disaggregation = spec.disaggregation
    connector = disaggregation.connector
    same_tp = LAYOUT_RULES[connector].same_tensor_parallel
    if same_tp is not None and prefill.replicas and prefill.tensor_parallel != decode.tensor_parallel:
        how = {role: "pinned" if pins.tensor_parallel else "planned" for role, pins in _pins(spec).items()}
        raise LayoutError(
            "spec.prefill.tensorParallel",
            f"prefill TP{prefill.tensor_parallel} ({how[Role.PREFILL]}) differs from decode "
            f"TP{decode.tensor_parallel} ({how[Role.DECODE]}); {same_tp}, so both roles need one "
            "tensorParallel: pin spec.prefill.tensorParallel and spec.decode.tensorParallel",
        )
    pinned = disaggregation.prompt_tokens_threshold
    threshold = pinned if isinstance(pinned, int) else plan.prompt_tokens_threshold
    return PoolLayout(
        prefill=prefill,
        decode=decode,
        prompt_tokens_threshold=threshold,
        connector=connector,
        max_model_len=spec.model.max_model_len,
        hands_off=bool(plan.prefill and plan.prefill.replicas) or bool(spec.prefill.replicas),
    )
