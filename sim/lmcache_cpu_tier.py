"""LMCache's CPU tier on a prefiller (``local_cpu``, ``max_local_cpu_size``), as far as prefix reuse
goes: which chunks it holds, least recently used first.

LMCache 0.5.6 (the lmcache 0.5.6 wheel's ``lmcache/``): in PD mode the CPU backend exists only with
``local_cpu: true`` (``v1/storage_backend/__init__.py`` 173-190); it holds ``max_local_cpu_size``
GiB per worker rank (``local_cpu_backend.py`` 403) and evicts least recently used chunks (the
default ``cache_policy``). A producer stores every chunk it computes in it (``storage_manager.py``
``batched_put`` puts to every backend; ``vllm_v1_adapter.py`` 1059-1060: no leading tokens skipped)
and looks each prompt up in it before prefilling (1388-1390), under the same keys as its PD
pushes, tags included (``utils.py`` 428-464: tags are part of ``CacheEngineKey``). A decoder never
saves (1024-1026), so the simulator keeps a tier on senders only.

Every storing rank holds the same chunks, so one LRU of rank 0's keys stands for all of them. A hit
is the leading chunks present; the engine loads the part past its own prefix-cache hit at the
timing's ``offload_load_ms_per_token``.
"""

from __future__ import annotations

from collections import OrderedDict

from tandem.sim.lmcache_connector import Layout
from tandem.sim.pd_buffer import ChunkKeys
from tandem.sim.settings import LMCacheConfig

GIB = 2**30


class CpuTier:
    """Chunk keys of one rank's CPU tier, least recently used first."""

    def __init__(self, capacity_chunks: int) -> None:
        self.capacity_chunks = capacity_chunks
        self._chunks: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def of(cls, lmcache: LMCacheConfig, layout: Layout) -> CpuTier | None:
        """The tier the config asks for; None without one (``local_cpu: false``, or no room)."""
        capacity = int(lmcache.max_local_cpu_size * GIB) // layout.chunk_bytes
        return cls(capacity) if lmcache.local_cpu and capacity > 0 else None

    def __len__(self) -> int:
        return len(self._chunks)

    def lookup(self, keys: list[str], chunks: ChunkKeys) -> int:
        """Leading prompt tokens whose chunks the tier holds; those chunks become most recent."""
        tokens = 0
        for key, length in zip(keys, chunks.lengths, strict=True):
            if key not in self._chunks:
                break
            self._chunks.move_to_end(key)
            tokens += length
        return tokens

    def store(self, keys: list[str]) -> None:
        for key in keys:
            self._chunks[key] = None
            self._chunks.move_to_end(key)
        while len(self._chunks) > self.capacity_chunks:
            self._chunks.popitem(last=False)
