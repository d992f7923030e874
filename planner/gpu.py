"""GPU specifications, as the catalog (data/gpus.yaml) states them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GIB = 2**30


class Interconnect(BaseModel):
    """The intra-node link the tensor-parallel all-reduce runs over."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["nvlink", "pcie"]
    link_bandwidth_gbps: float = Field(gt=0, description="GB/s per GPU per direction.")


class GpuSpec(BaseModel):
    """One accelerator type: capacity, peak rates, links and an indicative price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    aliases: tuple[str, ...] = ()
    device_name: str = Field(
        min_length=1, description="The name NVML reports (nvidia-smi's name); node labels derive from it."
    )
    calibration_class: str
    memory_gib: float = Field(gt=0, description="Total memory the CUDA runtime reports, GiB.")
    hbm_bandwidth_gbps: float = Field(gt=0, description="Device memory bandwidth, GB/s.")
    bf16_tflops: float = Field(gt=0, description="Dense BF16 tensor TFLOP/s.")
    fp8_tflops: float | None = Field(default=None, gt=0, description="Dense FP8 TFLOP/s; None: no FP8 cores.")
    interconnect: Interconnect
    network_gbps: float = Field(gt=0, description="Node network per GPU, Gbit/s.")
    host_link_gbps: float = Field(gt=0, description="Host memory to GPU (PCIe) per direction, GB/s.")
    local_disk_gbps: float = Field(gt=0, description="Local NVMe read per GPU, GB/s (an estimate).")
    price_per_hour_usd: float = Field(ge=0, description="Indicative list price per GPU-hour.")
    sources: dict[str, str] = Field(default_factory=dict)

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB

    @property
    def hbm_bytes_per_ms(self) -> float:
        return self.hbm_bandwidth_gbps * 1e6

    @property
    def link_bytes_per_ms(self) -> float:
        return self.interconnect.link_bandwidth_gbps * 1e6

    @property
    def host_link_bytes_per_ms(self) -> float:
        return self.host_link_gbps * 1e6

    @property
    def local_disk_bytes_per_ms(self) -> float:
        return self.local_disk_gbps * 1e6

    @property
    def network_bytes_per_ms(self) -> float:
        return self.network_gbps * 1e9 / 8 / 1e3

    def peak_flops_per_ms(self, fp8: bool) -> float:
        """Dense tensor FLOP/ms for linear layers: FP8 where both weights and chip support it."""
        tflops = self.fp8_tflops if fp8 and self.fp8_tflops is not None else self.bf16_tflops
        return tflops * 1e9

    @property
    def bf16_flops_per_ms(self) -> float:
        return self.bf16_tflops * 1e9
