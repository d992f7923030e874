"""The plan: what the planner decided and why, per role, with the alternative it turned down.

The JSON of a `Plan` is what the operator stores and the simulator reads (`plan["decode"]
["engine_timing"]`); `Plan.to_status()` is the InferencePool status shape.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tandem.api import DisaggregationMode, EngineTiming, PlanStatus, RolePlanStatus

Deployment = Literal["Disaggregated", "Aggregated"]
Role = Literal["prefill", "decode", "aggregated"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RolePlan(_Frozen):
    """How one role is sized: its replica layout, count, limits and predicted latency."""

    role: Role
    gpu_type: str
    tensor_parallel: int = Field(ge=1)
    pipeline_parallel: int = Field(ge=1)
    replicas: int = Field(ge=0)
    gpus: int = Field(ge=0, description="GPUs of the role in total.")
    max_batch: int = Field(ge=1, description="Sequences one replica runs at once (max_num_seqs).")
    max_num_batched_tokens: int = Field(ge=1, description="Tokens one engine step may take.")
    kv_capacity_tokens: int = Field(ge=0, description="KV cache of one replica, tokens.")
    engine_timing: EngineTiming
    max_requests_per_second: float = Field(
        ge=0, description="What the role's replicas sustain within the SLO."
    )
    utilization: float = Field(ge=0, description="Planned load over that capacity.")
    cost_per_hour_usd: float = Field(ge=0)
    predicted_ttft_ms: float | None = None
    predicted_itl_ms: float | None = None
    prefill_chunk_tokens: int | None = Field(default=None, description="Aggregated: prompt tokens per step.")
    pinned: tuple[str, ...] = Field(default=(), description="Fields the pool's spec fixed.")

    def idle(self) -> RolePlan:
        """The same role deployed with no replicas (prefill under aggregated serving)."""
        return self.model_copy(
            update={
                "replicas": 0,
                "gpus": 0,
                "max_requests_per_second": 0.0,
                "utilization": 0.0,
                "cost_per_hour_usd": 0.0,
                "predicted_ttft_ms": None,
                "predicted_itl_ms": None,
            }
        )

    def to_status(self) -> RolePlanStatus:
        return RolePlanStatus(
            gpu_type=self.gpu_type,
            tensor_parallel=self.tensor_parallel,
            pipeline_parallel=self.pipeline_parallel,
            replicas=self.replicas,
            gpus=self.gpus,
            max_batch=self.max_batch,
            kv_capacity_tokens=self.kv_capacity_tokens,
        )


class DeploymentPlan(_Frozen):
    """One way to serve the pool (disaggregated or aggregated), sized, feasible or not."""

    kind: Deployment
    feasible: bool
    reason: str | None = None
    prefill: RolePlan | None = None
    decode: RolePlan | None = Field(default=None, description="Aggregated: the replicas that do both.")
    gpus: int = 0
    cost_per_hour_usd: float = 0.0
    predicted_ttft_ms: float | None = None
    predicted_itl_ms: float | None = None
    max_requests_per_second: float | None = None


class Plan(_Frozen):
    """The planner's answer for one pool."""

    model: str
    feasible: bool
    reason: str | None = Field(default=None, description="Why the deployed alternative is infeasible.")
    mode: DisaggregationMode
    deployment: Deployment = Field(description="What is deployed, given the mode.")
    recommended: Deployment | None = Field(description="What the planner would deploy in mode Auto.")
    percentile: float
    requests_per_second: float
    prefill: RolePlan | None = Field(description="Deployed prefill role (0 replicas when aggregated).")
    decode: RolePlan | None
    gpus: int
    cost_per_hour_usd: float
    predicted_ttft_ms: float | None
    predicted_itl_ms: float | None
    max_requests_per_second: float | None
    prompt_tokens_threshold: int | None = Field(
        description="Prompts of at least this many tokens become prefill->decode handoffs; None when "
        "aggregated."
    )
    disaggregated: DeploymentPlan
    aggregated: DeploymentPlan
    calibration_sources: dict[str, str] = Field(default_factory=dict)
    rationale: str

    def to_status(self) -> PlanStatus:
        """The plan as it appears in the InferencePool status."""
        return PlanStatus(
            feasible=self.feasible,
            recommended=self.recommended,
            prefill=self.prefill.to_status() if self.prefill else None,
            decode=self.decode.to_status() if self.decode else None,
            predicted_ttft_ms=self.predicted_ttft_ms,
            predicted_itl_ms=self.predicted_itl_ms,
            max_requests_per_second=self.max_requests_per_second,
            prompt_tokens_threshold=self.prompt_tokens_threshold,
            rationale=self.rationale,
        )
