"""The engine's timing follows its EngineTiming: time to first token grows with the prompt, the
inter-token latency with the batch, a full KV cache queues requests and preemption recomputes
without changing answers. The engine keeps time by its event loop, whose time is faked in the timing
tests (``on_fake_time``): the modelled times come out exactly, however loaded the machine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_time import on_fake_time

from tandem.api.timing import EngineTiming
from tandem.sim.connector import EngineRequest, NoConnector
from tandem.sim.engine import Engine
from tandem.sim.metrics import SimMetrics
from tandem.sim.settings import SimSettings
from tandem.sim.stopping import StopRules
from tandem.sim.tokenizer import default_tokenizer

LABELS = {"model_name": "tandem/sim-model", "engine": "0"}


@contextlib.asynccontextmanager
async def running_engine(timing: EngineTiming, **settings: Any) -> AsyncIterator[tuple[Engine, SimMetrics]]:
    metrics = SimMetrics("tandem/sim-model")
    engine = Engine(SimSettings(timing=timing, **settings), default_tokenizer(), metrics, NoConnector())
    loop = asyncio.create_task(engine.run())
    try:
        yield engine, metrics
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await engine.close()


def request(name: str, prompt_len: int, max_tokens: int) -> EngineRequest:
    prompt = [300 + (hash(name) + i) % 1000 for i in range(prompt_len)]
    return EngineRequest(name, prompt, StopRules(max_tokens=max_tokens))


async def time_to_first_token(engine: Engine, req: EngineRequest) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    stream = await engine.generate(req)
    await stream.next()
    elapsed = loop.time() - started
    await stream.text()
    return elapsed


def sample(metrics: SimMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name, LABELS)
    assert value is not None
    return value


@on_fake_time
async def test_time_to_first_token_grows_with_the_prompt() -> None:
    timing = EngineTiming(prefill_base_ms=2, prefill_ms_per_token=0.5)
    async with running_engine(timing, speed=2) as (engine, _):
        short = await time_to_first_token(engine, request("short", 100, 2))  # modelled 26 ms
        long = await time_to_first_token(engine, request("long", 1000, 2))  # modelled 251 ms
    assert (short, long) == (pytest.approx(0.026), pytest.approx(0.251))


async def mean_inter_token_latency(batch: int) -> float:
    timing = EngineTiming(decode_step_base_ms=4, decode_ms_per_seq=1, decode_ms_per_kilotoken=0)
    async with running_engine(timing) as (engine, metrics):
        streams = [await engine.generate(request(f"r{i}", 8, 11)) for i in range(batch)]
        await asyncio.gather(*(s.text() for s in streams))
        total = sample(metrics, "vllm:inter_token_latency_seconds_sum")
        count = sample(metrics, "vllm:inter_token_latency_seconds_count")
    assert count == batch * 10
    return total / count


@on_fake_time
async def test_inter_token_latency_grows_with_the_batch() -> None:
    alone = await mean_inter_token_latency(1)  # modelled 5 ms a step
    crowded = await mean_inter_token_latency(40)  # modelled 44 ms a step
    assert (alone, crowded) == (pytest.approx(0.005), pytest.approx(0.044))


@on_fake_time
async def test_a_full_kv_cache_queues_requests_until_blocks_free() -> None:
    timing = EngineTiming(kv_capacity_tokens=256, decode_step_base_ms=40, decode_ms_per_seq=0)
    async with running_engine(timing, max_model_len=256, speed=4) as (engine, metrics):
        streams = [
            await engine.generate(request(f"r{i}", 100, 20)) for i in range(4)
        ]  # 8 blocks each, 16 fit
        await asyncio.sleep(0.05)
        assert (len(engine.scheduler.running), len(engine.scheduler.waiting)) == (2, 2)
        assert sample(metrics, "vllm:num_requests_waiting") == 2
        await asyncio.gather(*(s.text() for s in streams))
        assert sample(metrics, "vllm:request_queue_time_seconds_count") == 4
        # The two that queued waited for a whole generation (19 decode steps of 40 ms, at speed 4).
        assert sample(metrics, "vllm:request_queue_time_seconds_sum") >= 2 * 19 * 0.040 / 4


async def test_preemption_recomputes_and_keeps_the_answers() -> None:
    async def answers(capacity: int) -> tuple[list[str], float]:
        timing = EngineTiming(kv_capacity_tokens=capacity)
        async with running_engine(timing, max_model_len=128, speed=50) as (engine, metrics):
            streams = [await engine.generate(request(f"p{i}", 60, 40)) for i in range(2)]
            texts = list(await asyncio.gather(*(s.text() for s in streams)))
            return texts, sample(metrics, "vllm:num_preemptions_total")

    roomy, no_preemptions = await answers(4096)
    tight, preemptions = await answers(128)  # 8 blocks: both fit at first, not once they grow
    assert no_preemptions == 0 and preemptions >= 1
    assert tight == roomy
