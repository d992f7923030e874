"""The plan: what the planner decided and why, per role, with the alternative it turned down.

The JSON of a `Plan` is what the operator stores and the simulator reads (`plan["decode"]
["engine_timing"]`); `Plan.to_status()` is the InferencePool status shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tandem.api import DisaggregationMode, EngineTiming, PlanStatus, RolePlanStatus, SloSpec
from tandem.planner.request import GpuBudget

Deployment = Literal["Disaggregated", "Aggregated"]
Role = Literal["prefill", "decode", "aggregated"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PrefixReusePlan(_Frozen):
    """Where a prefill replica finds the reused prefix tokens (planner/prefix_reuse.py), and what a
    prompt at the SLO percentile takes to prefill with them and without."""

    gpu_share: float = Field(ge=0, le=1, description="Of reused tokens: hits in vLLM's GPU prefix cache.")
    cpu_share: float = Field(ge=0, le=1, description="Loaded from LMCache's CPU tier.")
    disk_share: float = Field(ge=0, le=1, description="Loaded from LMCache's disk tier.")
    recomputed_share: float = Field(ge=0, le=1, description="Found nowhere: prefilled again.")
    prefill_ms: float = Field(ge=0, description="The prompt's prefill as planned, tier loads included.")
    recompute_ms: float = Field(ge=0, description="The same prompt prefilled whole.")


class RolePlan(_Frozen):
    """How one role is sized: its replica layout, count, limits and predicted latency.

    A replica is one vLLM deployment of tensor_parallel x pipeline_parallel x data_parallel GPUs
    over `nodes` nodes; each of its `data_parallel` ranks is an engine (its own scheduler, batch
    and KV cache). `max_batch`, `max_num_batched_tokens`, `kv_capacity_tokens` and
    `engine_timing` are per engine: with data_parallel 1 that is the replica.
    """

    role: Role
    gpu_type: str
    gpu_device: str = Field(description="The GPU's device name as NVML reports it (the catalog's).")
    tensor_parallel: int = Field(ge=1)
    pipeline_parallel: int = Field(ge=1)
    data_parallel: int = Field(default=1, ge=1, description="Attention DP ranks (--data-parallel-size).")
    data_parallel_local: int = Field(
        default=1, ge=1, description="DP ranks on one node (--data-parallel-size-local)."
    )
    expert_parallel: bool = Field(
        default=False, description="Routed experts whole per GPU over DP x TP (--enable-expert-parallel)."
    )
    all2all_backend: str | None = Field(
        default=None, description="The --all2all-backend the timing assumes (with data_parallel > 1)."
    )
    nodes: int = Field(default=1, ge=1, description="Nodes one replica spans.")
    replicas: int = Field(ge=0)
    gpus: int = Field(ge=0, description="GPUs of the role in total.")
    max_batch: int = Field(ge=1, description="Sequences one engine runs at once (max_num_seqs).")
    max_num_batched_tokens: int = Field(ge=1, description="Tokens one engine step may take.")
    kv_capacity_tokens: int = Field(ge=0, description="KV cache of one engine, tokens.")
    gpu_memory_utilization: float = Field(
        gt=0, le=1, description="The memory fraction the KV capacity assumes: the engines' flag."
    )
    engine_timing: EngineTiming
    max_requests_per_second: float = Field(
        ge=0, description="What the role's replicas sustain within the SLO."
    )
    utilization: float = Field(ge=0, description="Planned load over that capacity.")
    cost_per_hour_usd: float = Field(ge=0)
    predicted_ttft_ms: float | None = None
    predicted_itl_ms: float | None = None
    prefill_chunk_tokens: int | None = Field(default=None, description="Aggregated: prompt tokens per step.")
    prefix_reuse: PrefixReusePlan | None = Field(
        default=None, description="Prefill, with workload.prefixWorkingSetTokens: where reuse is served."
    )
    pd_buffer_bytes: int | None = Field(
        default=None, description="Decoders of an LMCache pool: each rank's PD buffer (pd_buffer_size)."
    )
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
            data_parallel=self.data_parallel,
            expert_parallel=self.expert_parallel,
            replicas=self.replicas,
            gpus=self.gpus,
            max_batch=self.max_batch,
            kv_capacity_tokens=self.kv_capacity_tokens,
            engine_timing=self.engine_timing,
            pd_buffer_bytes=self.pd_buffer_bytes,
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

    @property
    def cost_key(self) -> tuple[int, float]:
        """What the deployment costs, in the order the choice compares: GPUs, then USD per hour."""
        return self.gpus, round(self.cost_per_hour_usd, 6)

    def slo_headroom(self, slo: SloSpec, requests_per_second: float) -> Margin:
        """The tightest of the deployment's margins: its two latency predictions at the SLO
        percentile against their targets, and the planned rate against the most it sustains within
        them (how far the load may grow before the targets break)."""
        margins = (
            Margin("TTFT", self.predicted_ttft_ms, slo.ttft_ms),
            Margin("ITL", self.predicted_itl_ms, slo.itl_ms),
            Margin("load", requests_per_second, self.max_requests_per_second),
        )
        return min(margins, key=lambda m: m.spare)


@dataclass(frozen=True)
class Margin:
    """How far one prediction stays below its limit: a latency below its target, or the planned
    request rate below the most the deployment sustains."""

    name: str  # TTFT | ITL | load
    predicted: float | None
    limit: float | None

    @property
    def spare(self) -> float:
        """1 - predicted / limit: the share of the limit left over (none without both)."""
        if self.predicted is None or not self.limit:
            return 0.0
        return 1 - self.predicted / self.limit


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
    gpu_budget: GpuBudget | None = Field(default=None, description="The GPU budget it was planned within.")
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
