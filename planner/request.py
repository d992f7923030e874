"""What the planner is asked: a model, GPU types, targets and a workload (`PlanRequest`), built by
hand, by the CLI, or from an InferencePool spec (`PlanRequest.from_pool_spec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tandem.api import (
    DisaggregationMode,
    InferencePoolSpec,
    KvConnector,
    ModelArchitecture,
    RoleSpec,
    SloSpec,
    WorkloadSpec,
)
from tandem.api.offload import OffloadTiers
from tandem.api.spec import (
    MAX_DATA_PARALLEL,
    MAX_PIPELINE_PARALLEL,
    MAX_REPLICAS,
    MAX_TENSOR_PARALLEL,
    Dtype,
    connector_in_use,
)
from tandem.planner.calibration import Calibration
from tandem.planner.connectors import LAYOUT_RULES, LayoutRules
from tandem.planner.model import KvCacheDtype

NO_EXPERT_PARALLEL = "expert-parallel layouts are off for this request (PlanRequest.expert_parallel)"


class RolePins(BaseModel):
    """Values fixed for one role; the planner evaluates them instead of choosing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tensor_parallel: int | None = Field(default=None, ge=1, le=MAX_TENSOR_PARALLEL)
    pipeline_parallel: int | None = Field(default=None, ge=1, le=MAX_PIPELINE_PARALLEL)
    replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    data_parallel: int | None = Field(default=None, ge=1, le=MAX_DATA_PARALLEL)
    expert_parallel: bool | None = None

    def names(self) -> tuple[str, ...]:
        """The pinned fields, as the spec spells them."""
        fields = (
            ("tensorParallel", self.tensor_parallel),
            ("pipelineParallel", self.pipeline_parallel),
            ("replicas", self.replicas),
            ("dataParallel", self.data_parallel),
            ("expertParallel", self.expert_parallel),
        )
        return tuple(name for name, value in fields if value is not None)

    def admits(self, dp: int, ep: bool) -> bool:
        """Whether a layout of `dp` ranks, experts whole per GPU or not, keeps the DP/EP pins."""
        return self.data_parallel in (None, dp) and self.expert_parallel in (None, ep)

    @classmethod
    def from_role_spec(cls, role: RoleSpec) -> RolePins:
        return cls(
            tensor_parallel=role.tensor_parallel,
            pipeline_parallel=role.pipeline_parallel,
            replicas=role.replicas,
            data_parallel=role.data_parallel,
            expert_parallel=role.expert_parallel,
        )


class GpuBudget(BaseModel):
    """The most GPUs a pool may take, and who set that limit (named in the plan's reasons)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus: int = Field(ge=1)
    source: str = Field(min_length=1, description="e.g. spec.maxGpus.")

    @staticmethod
    def tightest(*budgets: GpuBudget | None) -> GpuBudget | None:
        """The smallest of the budgets given (the first of equals), or None when there is none."""
        given = [budget for budget in budgets if budget is not None]
        return min(given, key=lambda budget: budget.gpus) if given else None


class PlanRequest(BaseModel):
    """Everything a plan depends on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, description="Hugging Face id or catalog name.")
    architecture: ModelArchitecture | None = Field(
        default=None, description="Shape override (wins over the catalog)."
    )
    hf_config: dict[str, Any] | None = Field(
        default=None, description="A config.json, parsed (wins over both)."
    )
    dtype: Dtype = Dtype.AUTO
    kv_cache_dtype: KvCacheDtype = Field(default="auto", description="vLLM's --kv-cache-dtype.")
    prefill_gpus: tuple[str, ...] = Field(
        min_length=1, description="GPU types prefill may use; the planner picks."
    )
    decode_gpus: tuple[str, ...] = Field(
        min_length=1, description="GPU types decode (and aggregated) may use."
    )
    gpus_per_node: int = Field(default=8, ge=1, le=16)
    slo: SloSpec = Field(default_factory=SloSpec)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    mode: DisaggregationMode = DisaggregationMode.AUTO
    prompt_tokens_threshold: int | None = Field(default=None, ge=0, description="Pinned handoff threshold.")
    prefill: RolePins = Field(default_factory=RolePins)
    decode: RolePins = Field(default_factory=RolePins)
    kv_link_gbps: float | None = Field(
        default=None, gt=0, description="Prefill->decode link per GPU, Gbit/s."
    )
    max_model_len: int | None = Field(default=None, ge=16)
    connector: KvConnector | None = Field(
        default=None, description="The KV connector, whose layout rules apply (planner/connectors.py)."
    )
    gpu_budget: GpuBudget | None = Field(default=None, description="The most GPUs the plan may take.")
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="vLLM's memory fraction, over every calibration's."
    )
    calibrations: dict[str, Calibration] = Field(
        default_factory=dict, description="Per GPU name, over the files."
    )
    calibration_dir: Path | None = Field(
        default=None, description="Folder of <GPU>.yaml fits (default: package data)."
    )
    expert_parallel: bool = Field(
        default=True,
        description="Search data-parallel attention and expert-parallel layouts for MoE models.",
    )
    offload: OffloadTiers | None = Field(
        default=None, description="LMCache's offload tiers on prefillers (planner/prefix_reuse.py)."
    )
    pd_chunk_tokens: int = Field(default=256, ge=16, description="LMCache's chunk_size.")
    decoder_buffer_bytes: int | None = Field(
        default=None, ge=1, description="Pinned pd_buffer_size of decoders; None: the plan sizes it."
    )

    @model_validator(mode="after")
    def _connector_fits_mode(self) -> PlanRequest:
        if self.connector is not None:
            connector_in_use(self.mode, self.connector)  # refuses connector none outside mode Never
        return self

    @property
    def layout_rules(self) -> LayoutRules:
        """What the connector in use asks of the layouts (mode Never uses none); no connector named
        (a hand-made request) constrains nothing."""
        if self.connector is None:
            return LayoutRules()
        return LAYOUT_RULES[connector_in_use(self.mode, self.connector)]

    @property
    def no_expert_parallel(self) -> str | None:
        """Why MoE models get no DP/EP layouts; None when they do."""
        if not self.expert_parallel:
            return NO_EXPERT_PARALLEL
        return self.layout_rules.no_data_parallel

    @classmethod
    def from_pool_spec(cls, spec: InferencePoolSpec, limit: GpuBudget | None = None) -> PlanRequest:
        """The request an InferencePool spec makes: per-role placements, pins, mode and threshold;
        the GPU budget is the tighter of spec.maxGpus and `limit` (the operator's)."""
        accelerator = spec.accelerator
        prefill_gpu = accelerator.prefill.type if accelerator.prefill else accelerator.type
        decode_gpu = accelerator.decode.type if accelerator.decode else accelerator.type
        threshold = spec.disaggregation.prompt_tokens_threshold
        return cls(
            model=spec.model.name,
            architecture=spec.model.architecture,
            dtype=Dtype(spec.model.dtype),
            prefill_gpus=(prefill_gpu,),
            decode_gpus=(decode_gpu,),
            gpus_per_node=accelerator.gpus_per_node,
            slo=spec.slo,
            workload=spec.workload,
            mode=DisaggregationMode(spec.disaggregation.mode),
            prompt_tokens_threshold=threshold if isinstance(threshold, int) else None,
            prefill=RolePins.from_role_spec(spec.prefill),
            decode=RolePins.from_role_spec(spec.decode),
            max_model_len=spec.model.max_model_len,
            connector=spec.disaggregation.connector,
            gpu_budget=GpuBudget.tightest(
                GpuBudget(gpus=spec.max_gpus, source="spec.maxGpus") if spec.max_gpus else None, limit
            ),
            gpu_memory_utilization=spec.engine.gpu_memory_utilization,
            offload=spec.disaggregation.kv_transfer.lmcache.offload,
            pd_chunk_tokens=spec.disaggregation.kv_transfer.lmcache.chunk_size,
            decoder_buffer_bytes=spec.disaggregation.kv_transfer.lmcache.decoder_buffer_bytes,
        )
