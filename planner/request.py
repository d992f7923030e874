"""What the planner is asked: a model, GPU types, targets and a workload (`PlanRequest`), built by
hand, by the CLI, or from an InferencePool spec (`PlanRequest.from_pool_spec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tandem.api import (
    DisaggregationMode,
    InferencePoolSpec,
    KvConnector,
    ModelArchitecture,
    RoleSpec,
    SloSpec,
    WorkloadSpec,
)
from tandem.api.spec import Dtype
from tandem.planner.calibration import Calibration
from tandem.planner.model import KvCacheDtype


class RolePins(BaseModel):
    """Values fixed for one role; the planner evaluates them instead of choosing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tensor_parallel: int | None = Field(default=None, ge=1, le=64)
    pipeline_parallel: int | None = Field(default=None, ge=1, le=64)
    replicas: int | None = Field(default=None, ge=0)

    def names(self) -> tuple[str, ...]:
        """The pinned fields, as the spec spells them."""
        fields = (
            ("tensorParallel", self.tensor_parallel),
            ("pipelineParallel", self.pipeline_parallel),
            ("replicas", self.replicas),
        )
        return tuple(name for name, value in fields if value is not None)

    @classmethod
    def from_role_spec(cls, role: RoleSpec) -> RolePins:
        return cls(
            tensor_parallel=role.tensor_parallel,
            pipeline_parallel=role.pipeline_parallel,
            replicas=role.replicas,
        )


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
    same_tensor_parallel: bool = Field(
        default=False, description="Prefill and decode must share a TP size (the LMCache connector)."
    )
    calibrations: dict[str, Calibration] = Field(
        default_factory=dict, description="Per GPU name, over the files."
    )
    calibration_dir: Path | None = Field(
        default=None, description="Folder of <GPU>.yaml fits (default: package data)."
    )

    @classmethod
    def from_pool_spec(cls, spec: InferencePoolSpec) -> PlanRequest:
        """The request an InferencePool spec makes: per-role placements, pins, mode and threshold."""
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
            same_tensor_parallel=spec.disaggregation.kv_transfer.connector == KvConnector.LMCACHE,
        )
