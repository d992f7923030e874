"""Prefix reuse on a prefill replica: which cache serves a reused prefix, and what it costs.

``workload.prefixReuseFraction`` of each prompt is a prefix earlier requests computed;
``workload.prefixWorkingSetTokens`` is how many distinct tokens those prefixes hold in all. A
replica's caches keep the most recently used of them: vLLM's GPU prefix cache what its batch leaves
of the KV cache, LMCache's tiers (``spec.disaggregation.kvTransfer.lmcache.offload``) their size.
LMCache writes every chunk a prefiller computes to each tier (``storage_manager.py`` ``batched_put``
goes to every backend), so a tier holds the most recent ``size`` of the working set whatever the
GPU holds. With the working set's prefixes reused alike (independent references under LRU), a
cache of C tokens serves ``min(1, C / W)`` of the reused tokens, and a tier serves what it reaches
beyond the faster caches.

What a reused token costs where it is found: nothing in the GPU cache; in the CPU tier its KV over
the host link (``host_link_gbps x host_link_eff``, each GPU its share on its own link, as each
LMCache worker rank loads its own); in the disk tier a local NVMe read (``local_disk_gbps``) and
then the host link; recomputed otherwise. The remote tier is not modelled: its bandwidth is the
store's, which the planner does not know.

Without a working set every reused token is a GPU hit, as the planner assumed before the tiers.
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem.api import WorkloadSpec
from tandem.api.offload import OffloadTiers
from tandem.planner.gpu import GIB
from tandem.planner.kv_cache import kv_bytes_per_token_per_gpu
from tandem.planner.layouts import Layout
from tandem.planner.model import ModelShape


def host_load_ms_per_token(model: ModelShape, layout: Layout) -> float:
    """A token's KV from host memory to the GPUs of one replica, each its share over its own link."""
    per_gpu = kv_bytes_per_token_per_gpu(model, layout.tp, layout.pp)
    return per_gpu / (layout.gpu.host_link_bytes_per_ms * layout.calibration.host_link_eff)


@dataclass(frozen=True)
class ReuseSplit:
    """Where a replica finds the reused prefix tokens: shares of them, and their load time."""

    gpu: float = 1.0
    cpu: float = 0.0
    disk: float = 0.0
    load_ms_per_token: float = 0.0  # per reused token, averaged over the shares

    @property
    def served(self) -> float:
        """The share not recomputed."""
        return self.gpu + self.cpu + self.disk

    @property
    def recomputed(self) -> float:
        return 1.0 - self.served


@dataclass(frozen=True)
class PrefixReuse:
    """The workload's reuse and the tiers that serve it (GiB per GPU, as the API sizes them)."""

    fraction: float = 0.0
    working_set_tokens: int | None = None
    cpu_gib: float = 0.0
    disk_gib: float = 0.0

    @classmethod
    def of(cls, workload: WorkloadSpec, offload: OffloadTiers | None) -> PrefixReuse:
        return cls(
            fraction=workload.prefix_reuse_fraction,
            working_set_tokens=workload.prefix_working_set_tokens,
            cpu_gib=offload.cpu.size_gib if offload and offload.cpu else 0.0,
            disk_gib=offload.disk.size_gib if offload and offload.disk else 0.0,
        )

    def split(self, model: ModelShape, layout: Layout, gpu_cache_tokens: float) -> ReuseSplit:
        """Where one replica of `layout` finds reused tokens, its GPU cache holding `gpu_cache_tokens`."""
        working_set = self.working_set_tokens
        if working_set is None or self.fraction == 0:
            return ReuseSplit()
        per_gpu = kv_bytes_per_token_per_gpu(model, layout.tp, layout.pp)

        def reach(*tokens: float) -> float:
            return min(1.0, max(tokens) / working_set)

        cpu_tokens = self.cpu_gib * GIB / per_gpu
        disk_tokens = self.disk_gib * GIB / per_gpu
        gpu = reach(max(0.0, gpu_cache_tokens))
        cpu = reach(gpu_cache_tokens, cpu_tokens) - gpu
        disk = reach(gpu_cache_tokens, cpu_tokens, disk_tokens) - gpu - cpu
        host_ms = host_load_ms_per_token(model, layout)
        disk_ms = per_gpu / layout.gpu.local_disk_bytes_per_ms + host_ms
        return ReuseSplit(gpu, cpu, disk, cpu * host_ms + disk * disk_ms)

    def computed_share(self, split: ReuseSplit) -> float:
        """The share of each prompt a replica prefills: what no cache or tier serves."""
        return 1.0 - self.fraction * split.served
