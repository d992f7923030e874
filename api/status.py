"""InferencePool status: what the operator planned and observed."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from tandem.api.autoscaling import AutoscalingStatus
from tandem.api.base import ApiModel
from tandem.api.timing import EngineTiming


class ConditionType(StrEnum):
    PLANNED = "Planned"  # the planner produced a feasible plan for the spec
    PROGRESSING = "Progressing"  # children are being created or rolled out
    READY = "Ready"  # every role has its desired replicas ready and the router serves
    DEGRADED = "Degraded"  # serving, but some role runs below its desired replicas
    # A Gateway accepted the pool's Gateway API Inference Extension InferencePool (spec.gatewayAPI);
    # shown where that is asked for or possible, and never part of Ready (the router serves anyway).
    GATEWAY_ACCEPTED = "GatewayAccepted"
    AUTOSCALING = "Autoscaling"  # spec.autoscaling is in force (only with a mode other than Off)


class Condition(ApiModel):
    """The Kubernetes condition shape (metav1.Condition)."""

    type: str = Field(min_length=1)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str | None = Field(default=None, description="RFC 3339.")
    observed_generation: int | None = Field(default=None, ge=0)


class RolePlanStatus(ApiModel):
    gpu_type: str
    tensor_parallel: int = Field(ge=1)
    pipeline_parallel: int = Field(ge=1)
    data_parallel: int = Field(
        default=1, ge=1, description="DP ranks of one replica: engines behind its one endpoint."
    )
    expert_parallel: bool = Field(default=False, description="Routed experts whole per GPU over DP x TP.")
    replicas: int = Field(ge=0)
    gpus: int = Field(ge=0, description="GPUs of the role in total.")
    max_batch: int | None = Field(default=None, ge=0, description="Sequences one engine (DP rank) runs.")
    kv_capacity_tokens: int | None = Field(default=None, ge=0)
    engine_timing: EngineTiming | None = Field(
        default=None,
        description="How fast one engine runs: the simulator's timing, the router's GPU-time estimate.",
    )
    pd_buffer_bytes: int | None = Field(
        default=None, ge=0, description="Decoders: the LMCache PD buffer of each rank (pd_buffer_size)."
    )


class PlanStatus(ApiModel):
    feasible: bool
    recommended: Literal["Disaggregated", "Aggregated"] | None = None
    prefill: RolePlanStatus | None = None
    decode: RolePlanStatus | None = None
    predicted_ttft_ms: float | None = None
    predicted_itl_ms: float | None = None
    max_requests_per_second: float | None = None
    prompt_tokens_threshold: int | None = Field(default=None, ge=0)
    rationale: str = ""


class RoleStatus(ApiModel):
    replicas: int = Field(default=0, ge=0)
    ready_replicas: int = Field(default=0, ge=0)
    ready: str = Field(default="0/0", description="readyReplicas/replicas, for display.")


class RouterStatus(RoleStatus):
    endpoint: str | None = Field(default=None, description="In-cluster URL of the OpenAI-compatible API.")
    shared: str | None = Field(
        default=None, description="The shared router serving the pool (spec.router.shared)."
    )


class InferencePoolStatus(ApiModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    plan: PlanStatus | None = None
    prefill: RoleStatus | None = None
    decode: RoleStatus | None = None
    router: RouterStatus | None = None
    autoscaling: AutoscalingStatus | None = None
