"""The LMCache PD receive buffer of a decoder rank (`pd_buffer_size`): what the planned rate needs.

Where the buffer lives. LMCache 0.5.6 allocates it with `torch.empty(size, device="cuda")`
(`v1/memory_allocators/paged_cpu_gpu_memory_allocator.py:52`, from `initialize_allocator` in
`v1/storage_backend/pd_backend_async.py`), in the StorageManager that `LMCacheEngine.post_init`
builds (`v1/cache_engine.py:324`), which `register_kv_caches` calls
(`integration/vllm/vllm_v1_adapter.py:754`). vLLM 0.33.0 calls that after it has sized its KV cache
(`v1/worker/gpu_worker.py:641`, `determine_available_memory`: `requested_memory - non_kv_cache_memory`,
where `requested_memory` is `--gpu-memory-utilization` x the GPU's memory, `v1/worker/utils.py:724`)
and allocated it (`v1/worker/gpu_model_runner.py:7054`). So the buffer is GPU memory *outside*
vLLM's budget: it takes nothing from the KV cache, and it must fit in the share of the GPU that
`--gpu-memory-utilization` leaves over (which also holds the CUDA context), or the decoder fails
to start.

How big. The router admits a handoff into a decoder's buffer from the handoff's admission until
the decode leg has read its KV (router/pd_buffer.py): the prefill's wait, the prefill, the transfer
and the decode step that reads it: the plan's TTFT of a p90 prompt, its wait at the SLO percentile
as if each prefill replica queued alone (``Sized.handoff_hold_ms``; the TTFT the plan predicts
takes the replicas as the one queue they are, planner/queueing.py, and is shorter). Little's law
gives the handoffs in flight per decoder, n: the rate per decoder times that hold. With Poisson
arrivals the chunks they hold are a compound Poisson sum over the prompt lengths the plan sizes
for (mean n E[c], variance n E[c^2]); the buffer holds it at IN_FLIGHT_LEVEL (a handoff without
room is refused, not slowed: far above the SLO percentile), and one p90 prompt more, the room an
arriving long one needs. Every request counts as a handoff, which bounds the chunks the handoffs
(the prompts above the threshold) move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from tandem.api.spec import MAX_REPLICAS
from tandem.planner.demand import Demand
from tandem.planner.gpu import GpuSpec
from tandem.planner.kv_cache import lmcache_chunk_bytes
from tandem.planner.lengths import LengthDistribution
from tandem.planner.model import ModelShape
from tandem.planner.request import RolePins
from tandem.planner.sizing import Failure, Sized, size_decode

GIB = 1024**3
# Planned sizes are whole multiples of this (LMCache aligns down to whole chunks itself).
PD_BUFFER_STEP_BYTES = 256 * 1024**2
# Of the GPU memory vLLM's --gpu-memory-utilization leaves outside its budget, this much stays for
# the CUDA context, cuBLAS workspaces and NIXL's own registrations; the PD buffer may take the rest.
OUTSIDE_VLLM_RESERVE_BYTES = 1 * GIB
# A handoff that finds no room is refused (503 in mode Always), not slowed: the buffer holds the
# count in flight at this level, far above the SLO percentile.
IN_FLIGHT_LEVEL = 0.999


@dataclass(frozen=True)
class BufferNeed:
    """What one decoder rank's PD buffer must hold at the planned rate."""

    chunk_bytes: int  # one chunk on one decoder rank
    handoff_chunks: int  # a p90 prompt's chunks
    in_flight_chunks: int  # the chunks in flight at IN_FLIGHT_LEVEL

    @property
    def smallest_bytes(self) -> int:
        """One p90 prompt's chunks: below this a p90 handoff never fits."""
        return self.handoff_chunks * self.chunk_bytes

    @property
    def exact_bytes(self) -> int:
        """The chunks in flight and an arriving p90 prompt's."""
        return (self.in_flight_chunks + self.handoff_chunks) * self.chunk_bytes

    @property
    def bytes(self) -> int:
        """The rate's need, rounded up to whole steps."""
        return math.ceil(self.exact_bytes / PD_BUFFER_STEP_BYTES) * PD_BUFFER_STEP_BYTES


def buffer_need(
    model: ModelShape,
    tp: int,
    chunk_size: int,
    prompts: LengthDistribution,
    handoffs_per_ms: float,
    hold_ms: float,
    percentile: float,
    level: float = IN_FLIGHT_LEVEL,
) -> BufferNeed:
    """The need of one decoder rank taking `handoffs_per_ms` handoffs of `prompts`' lengths, each
    held `hold_ms` (admission to the decode leg's read); the arriving one is `prompts`' `percentile`."""
    chunks = [math.ceil(tokens / chunk_size) for tokens in prompts.points]
    mean = sum(chunks) / len(chunks)
    square = sum(c * c for c in chunks) / len(chunks)
    n = handoffs_per_ms * hold_ms
    in_flight = n * mean + NormalDist().inv_cdf(level) * math.sqrt(n * square)
    return BufferNeed(
        chunk_bytes=lmcache_chunk_bytes(model, tp, chunk_size),
        handoff_chunks=math.ceil(prompts.quantile(percentile) / chunk_size),
        in_flight_chunks=math.ceil(in_flight),
    )


def most_bytes(gpu: GpuSpec, gpu_memory_utilization: float) -> int:
    """The largest buffer beside vLLM: the memory its budget leaves over, less the reserve, in steps."""
    outside = gpu.memory_bytes * (1 - gpu_memory_utilization) - OUTSIDE_VLLM_RESERVE_BYTES
    return max(0, math.floor(outside / PD_BUFFER_STEP_BYTES)) * PD_BUFFER_STEP_BYTES


def plan_decoder_buffer(
    model: ModelShape,
    prefill: Sized,
    decode: Sized,
    demand: Demand,
    pins: RolePins,
    chunk_size: int,
    pinned_bytes: int | None,
) -> tuple[Sized, int] | Failure:
    """The decoders' `pd_buffer_size` (a pin, checked, or the rate's need within `most_bytes`), with
    the decode role grown where one decoder's buffer cannot take its share of the rate."""
    # Admission to the decode leg's read of a p90 prompt. Its wait is taken at the SLO percentile,
    # not the mean, and as if each prefill replica queued alone, an upper bound on the router's one
    # queue: a burst of arrivals lengthens the holds of the handoffs it brings, all at once.
    hold_ms = prefill.handoff_hold_ms
    layout = decode.layout
    limit = pinned_bytes
    if limit is None:
        limit = most_bytes(layout.gpu, layout.calibration.gpu_memory_utilization)
    where = (
        f"the pinned decoderBufferBytes {pinned_bytes}"
        if pinned_bytes is not None
        else f"the {limit / GIB:.2f} GiB of {layout.gpu.name} outside vLLM's budget"
    )

    def need(replicas: int) -> BufferNeed:
        rate = demand.per_ms(demand.rps / replicas)
        return buffer_need(model, layout.tp, chunk_size, demand.prompt, rate, hold_ms, demand.percentile)

    replicas = decode.replicas
    first = need(replicas)
    if limit < first.smallest_bytes:
        return Failure(
            f"{where} holds no p{demand.percentile:g} prompt's KV ({first.handoff_chunks} chunks of "
            f"{first.chunk_bytes} B: {first.smallest_bytes} B) in a decoder's LMCache PD buffer"
        )
    # A role already over the most replicas is refused for that (the operator's bounds), not this.
    while need(replicas).exact_bytes > limit and replicas <= MAX_REPLICAS:
        if pins.replicas is not None or replicas == MAX_REPLICAS:
            return Failure(
                f"{where} limits the rate: at {demand.rps:g} requests/s each of {replicas} decoders "
                f"holds {need(replicas).in_flight_chunks} chunks in flight (at {IN_FLIGHT_LEVEL:.1%}), "
                f"{need(replicas).exact_bytes} B of LMCache PD buffer"
            )
        replicas += 1
    grown = decode
    if replicas != decode.replicas:
        resized = size_decode(model, [layout], demand, pins.model_copy(update={"replicas": replicas}))
        if isinstance(resized, Failure):
            return resized
        grown = resized
    planned = pinned_bytes if pinned_bytes is not None else min(need(replicas).bytes, limit)
    return grown, planned
