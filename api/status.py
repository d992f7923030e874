"""InferencePool status: what the operator planned and observed."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from tandem.api.base import ApiModel


class ConditionType(StrEnum):
    PLANNED = "Planned"  # the planner produced a feasible plan for the spec
    PROGRESSING = "Progressing"  # children are being created or rolled out
    READY = "Ready"  # every role has its desired replicas ready and the router serves
    DEGRADED = "Degraded"  # serving, but some role runs below its desired replicas


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
    replicas: int = Field(ge=0)
    gpus: int = Field(ge=0, description="GPUs of the role in total.")
    max_batch: int | None = Field(default=None, ge=0)
    kv_capacity_tokens: int | None = Field(default=None, ge=0)


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


class InferencePoolStatus(ApiModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    plan: PlanStatus | None = None
    prefill: RoleStatus | None = None
    decode: RoleStatus | None = None
    router: RouterStatus | None = None
