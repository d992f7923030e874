"""The simulator's LMCache CPU tier on a prefiller (sim/lmcache_cpu_tier.py): a prefix that fell out
of the GPU prefix cache but is still in the tier loads at the timing's transfer cost, faster than
a miss recomputes it and slower than a GPU hit; hits count as vLLM counts a connector's
(vllm:external_prefix_cache_*: v1/core/sched/scheduler.py 1211-1214).

Runs the sender's load and save with the engine core on a virtual clock (no sockets, no sleeps).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tandem.api import EngineTiming
from tandem.sim.connector import EngineRequest
from tandem.sim.core import EngineCore
from tandem.sim.faults import Faults, FaultState
from tandem.sim.generation import prefix_hashes
from tandem.sim.lmcache_sender import LMCacheSender
from tandem.sim.metrics import SimMetrics
from tandem.sim.scheduler import Sequence, StepPlan
from tandem.sim.settings import KVTransferConfig, LMCacheConfig, SimSettings
from tandem.sim.stopping import StopRules

BLOCK = 16
TIMING = EngineTiming(
    prefill_base_ms=5,
    prefill_ms_per_token=0.05,
    offload_load_ms_per_token=0.01,
    kv_capacity_tokens=4096,  # one 4000-token prompt pushes everything else out of the GPU cache
    max_num_batched_tokens=8192,
)
# 256-token chunks of 131072 B per token: 32 MiB each; 1 GiB holds 32 of them (8192 tokens).
LMCACHE = LMCacheConfig(
    enable_pd=True,
    pd_role="sender",
    pd_proxy_host="127.0.0.1",
    pd_proxy_port=1,
    pd_buffer_size=2**30,
    local_cpu=True,
    max_local_cpu_size=1.0,
)


class Prefiller:
    """A sender's connector and an engine core, driven by hand on a virtual clock."""

    def __init__(self, lmcache: LMCacheConfig = LMCACHE) -> None:
        config = KVTransferConfig(kv_connector="LMCacheConnectorV1", kv_role="kv_producer")
        settings = SimSettings(
            timing=TIMING, max_model_len=4096, kv_transfer_config=config, lmcache=lmcache, lmcache_hash_seed=7
        )
        self.sender = LMCacheSender(settings, lmcache, SimMetrics("m"), FaultState(Faults(), 0))
        self.core = EngineCore(TIMING, block_size=BLOCK)
        self.now = 0.0
        self.count = 0

    def prefill(self, prompt: list[int], params: dict[str, Any] | None = None) -> tuple[float, StepPlan]:
        """TTFT (seconds) of one request alone, and the step that admitted it; then it finishes."""
        self.count += 1
        request = EngineRequest(str(self.count), prompt, StopRules(max_tokens=1), params)
        hashes = tuple(prefix_hashes(prompt, 0)[BLOCK::BLOCK])
        cached = self.core.scheduler.cached_prefix_tokens(hashes, len(prompt))
        loaded = asyncio.run(self.sender.load(request, continuation=False, cached_tokens=cached))
        seq = Sequence(request.request_id, len(prompt), hashes, loaded.tokens, loaded.load_ms_per_token)
        self.core.add(seq, self.now)
        step = self.core.begin(self.now)
        (sampled,) = self.core.end(step, step.end)
        self.now = step.end + 1
        self.sender.on_prefill_done(request, 0)
        self.core.scheduler.finish(seq)
        assert self.core.begin(self.now).idle  # the engine idles: the next request's step starts afresh
        return sampled.latency, step.plan


@pytest.fixture
def prefiller() -> Iterator[Callable[..., Prefiller]]:
    made: list[Prefiller] = []

    def make(lmcache: LMCacheConfig = LMCACHE) -> Prefiller:
        made.append(Prefiller(lmcache))
        return made[-1]

    yield make
    for engine in made:
        asyncio.run(engine.sender.stop())  # its ZMQ context


def prompt(start: int, length: int) -> list[int]:
    return [1000 + start + i for i in range(length)]


def test_a_prefix_in_the_cpu_tier_is_faster_than_a_miss_and_slower_than_a_gpu_hit(
    prefiller: Callable[..., Prefiller],
) -> None:
    engine = prefiller()
    shared = prompt(0, 2048)
    miss, _ = engine.prefill(shared)
    gpu_hit, gpu_plan = engine.prefill(shared)
    assert gpu_plan.prefix_hit_tokens > 2000 and gpu_plan.external_hit_tokens == 0
    engine.prefill(prompt(50_000, 4000))  # evicts the shared prefix from the GPU cache, not the tier
    assert (
        engine.core.scheduler.cached_prefix_tokens(tuple(prefix_hashes(shared, 0)[BLOCK::BLOCK]), 2048) == 0
    )
    tier_hit, tier_plan = engine.prefill(shared)
    assert tier_plan.prefix_hit_tokens == 0 and tier_plan.external_hit_tokens == 2047
    assert tier_plan.external_query_tokens == 2048
    assert tier_plan.load_ms == pytest.approx(2047 * TIMING.offload_load_ms_per_token)
    assert gpu_hit < tier_hit < miss


def test_the_tier_holds_max_local_cpu_size_and_forgets_the_least_recent(
    prefiller: Callable[..., Prefiller],
) -> None:
    engine = prefiller(LMCACHE.model_copy(update={"max_local_cpu_size": 0.25}))  # 8 chunks: 2048 tokens
    first, second = prompt(0, 2048), prompt(70_000, 2048)
    engine.prefill(first)
    engine.prefill(second)  # the tier now holds only the second prompt's chunks
    engine.prefill(prompt(90_000, 4000))  # and the GPU cache neither
    _, plan = engine.prefill(first)
    assert plan.external_hit_tokens == 0 and plan.prefix_hit_tokens == 0


def test_without_local_cpu_there_is_no_tier(prefiller: Callable[..., Prefiller]) -> None:
    engine = prefiller(LMCACHE.model_copy(update={"local_cpu": False}))
    shared = prompt(0, 2048)
    engine.prefill(shared)
    engine.prefill(prompt(50_000, 4000))
    _, plan = engine.prefill(shared)
    assert plan.external_hit_tokens == 0


def test_tagged_requests_hit_only_chunks_stored_under_their_own_tag(
    prefiller: Callable[..., Prefiller],
) -> None:
    """LMCache keys every tier by the request's lmcache.tag.* (utils.py 428-464): handoffs under the
    tag the router leases them (lmcache.tag.tandem_handoff, router/connectors/tag_lease.py) share a
    prefix's chunks, handoffs under another tag do not."""
    engine = prefiller(LMCACHE.model_copy(update={"max_local_cpu_size": 2.0}))
    shared = prompt(0, 2048)
    engine.prefill(shared, {"lmcache.tag.tandem_handoff": "a"})
    engine.prefill(prompt(50_000, 4000))
    _, other = engine.prefill(shared, {"lmcache.tag.tandem_handoff": "b"})
    assert other.external_hit_tokens == 0
    engine.prefill(prompt(60_000, 4000))
    _, same = engine.prefill(shared, {"lmcache.tag.tandem_handoff": "a"})
    assert same.external_hit_tokens == 2047
