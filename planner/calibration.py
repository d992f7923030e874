"""Efficiency parameters of the cost model, per GPU: fitted files where they exist, class defaults
otherwise.

A fitted calibration lives in `planner/data/calibration/<GPU name>.yaml` (e.g. `H100-80GB.yaml`):
flat keys named as the fields of `Calibration`, any subset of them; missing keys come from the GPU's
class in `calibration/defaults.yaml`, which also documents the formulas these parameters enter.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.planner.catalog import read_data_yaml
from tandem.planner.errors import CalibrationError
from tandem.planner.gpu import GpuSpec

# vLLM 0.33's default --gpu-memory-utilization (vllm/config/cache.py, CacheConfig.gpu_memory_utilization).
VLLM_GPU_MEMORY_UTILIZATION = 0.92


class Calibration(BaseModel):
    """How close one GPU type gets to its peaks under vLLM. See calibration/defaults.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(default="", description="Where the numbers come from (fit, date, engine version).")
    mfu_max: float = Field(gt=0, le=1, description="Prefill linear-layer MFU at large token counts.")
    t_half_tokens: float = Field(ge=0, description="Batch tokens at which prefill MFU is half of mfu_max.")
    attn_eff: float = Field(gt=0, le=1, description="Prefill attention FLOP efficiency.")
    prefill_overhead_ms: float = Field(ge=0, description="Fixed time per prefill batch.")
    mbu_max: float = Field(gt=0, le=1, description="Decode weight-read bandwidth utilisation at batch 1.")
    mbu_batch_half: float = Field(
        gt=0, description="Decode batch at which that utilisation is half of mbu_max."
    )
    kv_read_eff: float = Field(
        gt=0, le=1, description="Decode attention's share of HBM bandwidth reading the KV cache."
    )
    kv_stream_eff: float = Field(
        gt=0, le=1, description="The share one sequence's KV stream of one KV head reaches."
    )
    mfu_decode: float = Field(gt=0, le=1, description="Decode FLOP efficiency when compute-bound.")
    step_overhead_ms: float = Field(ge=0, description="Fixed time per decode step.")
    layer_overhead_us: float = Field(
        default=0.0, ge=0, description="Fixed time per layer and forward pass (kernel ramp-up and tails)."
    )
    allreduce_latency_us: float = Field(ge=0, description="Latency of one tensor-parallel all-reduce.")
    allreduce_eff: float = Field(gt=0, le=1, description="Fraction of link bandwidth an all-reduce reaches.")
    kv_transfer_eff: float = Field(
        gt=0, le=1, description="Fraction of network bandwidth a KV handoff reaches."
    )
    kv_transfer_latency_ms: float = Field(ge=0, description="Fixed time of one KV handoff.")
    host_link_eff: float = Field(
        gt=0, le=1, description="Fraction of the host link a pinned host-to-GPU copy reaches."
    )
    gpu_memory_utilization: float = Field(
        default=VLLM_GPU_MEMORY_UTILIZATION,
        gt=0,
        le=1,
        description="vLLM's memory fraction, rendered as the engines' --gpu-memory-utilization.",
    )
    runtime_reserve_gib: float = Field(ge=0, description="Memory outside weights, activations and KV.")
    expert_mbu: float = Field(
        gt=0, le=1, description="Share of HBM bandwidth the grouped expert GEMMs reach on their weights."
    )
    expert_mfu: float = Field(gt=0, le=1, description="FLOP efficiency of the grouped expert GEMMs.")
    permute_eff: float = Field(
        gt=0, le=1, description="Share of HBM bandwidth moving tokens in and out of expert order."
    )
    moe_layer_overhead_us: float = Field(ge=0, description="Fixed time per MoE layer and pass.")
    expert_skew: float = Field(
        ge=1, description="Busiest GPU's expert load over the mean beyond random routing (EP)."
    )
    a2a_latency_us: float = Field(ge=0, description="Latency of one MoE dispatch or combine.")
    a2a_link_eff: float = Field(
        gt=0, le=1, description="Fraction of the intra-node link a dispatch or combine reaches."
    )
    a2a_network_eff: float = Field(
        gt=0, le=1, description="Fraction of the node network a dispatch or combine reaches."
    )


@cache
def class_defaults() -> Mapping[str, Mapping[str, Any]]:
    """Default parameters per GPU class (package data, read once)."""
    classes: Mapping[str, Mapping[str, Any]] = read_data_yaml("calibration", "defaults.yaml")["classes"]
    return classes


@cache
def default_calibration_dir() -> Path:
    return Path(str(resources.files("tandem.planner").joinpath("data", "calibration")))


@lru_cache(maxsize=64)
def _parsed(text: str) -> Any:
    """A calibration file's YAML (every plan reads the files of its GPUs; a changed file parses anew)."""
    loaded = yaml.safe_load(text)
    return MappingProxyType(loaded) if isinstance(loaded, dict) else loaded


def load_calibration(gpu: GpuSpec, directory: Path | None = None) -> Calibration:
    """The calibration of `gpu`: `<directory>/<gpu.name>.yaml` over the defaults of its class.

    `directory` defaults to the package's data/calibration folder.
    """
    defaults = class_defaults().get(gpu.calibration_class)
    if defaults is None:
        raise CalibrationError(f"GPU {gpu.name}: no calibration defaults for class {gpu.calibration_class!r}")
    fitted: Mapping[str, Any] = {}
    path = (directory or default_calibration_dir()) / f"{gpu.name}.yaml"
    if path.is_file():
        try:
            loaded = _parsed(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise CalibrationError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise CalibrationError(f"{path}: expected a mapping of calibration fields")
        fitted = loaded
    source = fitted.get("source") or f"defaults for class {gpu.calibration_class} (no fitted {path.name})"
    try:
        return Calibration(**{**defaults, **fitted, "source": source})
    except ValidationError as exc:
        raise CalibrationError(f"calibration of {gpu.name} ({path}): {exc}") from exc
