"""Efficiency parameters of the cost model, per GPU: fitted files where they exist, class defaults
otherwise.

A fitted calibration lives in `planner/data/calibration/<GPU name>.yaml` (e.g. `H100-80GB.yaml`):
flat keys named as the fields of `Calibration`, any subset of them; missing keys come from the GPU's
class in `calibration/defaults.yaml`, which also documents the formulas these parameters enter.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.planner.catalog import read_data_yaml
from tandem.planner.errors import CalibrationError
from tandem.planner.gpu import GpuSpec


class Calibration(BaseModel):
    """How close one GPU type gets to its peaks under vLLM. See calibration/defaults.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(default="", description="Where the numbers come from (fit, date, engine version).")
    mfu_max: float = Field(gt=0, le=1, description="Prefill linear-layer MFU at large token counts.")
    t_half_tokens: float = Field(ge=0, description="Batch tokens at which prefill MFU is half of mfu_max.")
    attn_eff: float = Field(gt=0, le=1, description="Prefill attention FLOP efficiency.")
    prefill_overhead_ms: float = Field(ge=0, description="Fixed time per prefill batch.")
    mbu_max: float = Field(gt=0, le=1, description="Decode memory-bandwidth utilisation at batch 1.")
    mbu_batch_half: float = Field(gt=0, description="Decode batch at which MBU is half of mbu_max.")
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
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="vLLM's memory fraction.")
    runtime_reserve_gib: float = Field(ge=0, description="Memory outside weights, activations and KV.")


@cache
def class_defaults() -> Mapping[str, Mapping[str, Any]]:
    """Default parameters per GPU class (package data, read once)."""
    classes: Mapping[str, Mapping[str, Any]] = read_data_yaml("calibration", "defaults.yaml")["classes"]
    return classes


def default_calibration_dir() -> Path:
    return Path(str(resources.files("tandem.planner").joinpath("data", "calibration")))


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
            loaded = yaml.safe_load(path.read_text()) or {}
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
