"""The twin's virtual clock runs the HTTP simulator's engine core: same scheduler, same step times,
the latencies vLLM's metrics observe; and its verdicts (bounded queues, percentiles) mean what they
say."""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from collections.abc import Sequence

import pytest

from tandem.api import DisaggregationMode
from tandem.api.timing import EngineTiming
from tandem.planner import plan
from tandem.sim.connector import EngineRequest, NoConnector
from tandem.sim.data_parallel import DataParallelEngines
from tandem.sim.engine import Engine
from tandem.sim.metrics import SimMetrics
from tandem.sim.scheduler import Chunk, StepPlan, step_ms
from tandem.sim.scheduler import Sequence as Seq
from tandem.sim.settings import SimSettings
from tandem.sim.stopping import StopRules
from tandem.sim.tokenizer import default_tokenizer
from tandem.sim.twin import (
    REFERENCE_WORKLOADS,
    WARMUP_FRACTION,
    Arrival,
    EngineRun,
    measure,
    percentile,
    poisson_arrivals,
    serve,
    serve_replica,
)

LABELS = {"model_name": "tandem/sim-model", "engine": "0"}
TIMING = EngineTiming(
    prefill_base_ms=4,
    prefill_ms_per_token=0.02,
    prefill_ms_per_token_sq=1e-6,
    decode_step_base_ms=6,
    decode_ms_per_seq=0.1,
    decode_ms_per_kilotoken=0.5,
    max_num_seqs=4,
    max_num_batched_tokens=512,
)


class _Timeless(selectors.SelectSelector):
    """A selector that never waits: it moves its loop's clock to the next timer instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout:
            self._loop.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps from timer to timer (no I/O happens on it)."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_Timeless(self))

    def time(self) -> float:
        return self.now


ARRIVALS = [
    Arrival(0.000, 700, 12),
    Arrival(0.003, 40, 30),  # arrives during the first prompt's prefill step
    Arrival(0.010, 1200, 5),  # chunked: 512 tokens a step, beside the decodes
    Arrival(0.011, 90, 20),
    Arrival(0.012, 300, 8),  # a fifth sequence: waits for a seat (max_num_seqs 4)
    Arrival(0.400, 64, 3),  # arrives at an idle engine
]


async def _serve_on_the_http_engine(arrivals: Sequence[Arrival], ranks: int = 1) -> SimMetrics:
    metrics = SimMetrics("tandem/sim-model")
    settings = SimSettings(timing=TIMING, enable_prefix_caching=False, data_parallel_size=ranks)
    engine = DataParallelEngines(
        [Engine(settings, default_tokenizer(), metrics, NoConnector(), rank) for rank in range(ranks)]
    )
    loop_task = asyncio.create_task(engine.run())

    async def one(index: int, arrival: Arrival) -> None:
        await asyncio.sleep(arrival.at - asyncio.get_running_loop().time())
        prompt = [300 + (index * 7919 + i) % 1000 for i in range(arrival.prompt_tokens)]
        rules = StopRules(max_tokens=arrival.output_tokens, ignore_eos=True)
        stream = await engine.generate(EngineRequest(f"r{index}", prompt, rules))
        await stream.text()

    await asyncio.gather(*(one(i, a) for i, a in enumerate(arrivals)))
    loop_task.cancel()
    await asyncio.gather(loop_task, return_exceptions=True)
    await engine.close()
    return metrics


def _sample(metrics: SimMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name, LABELS)
    assert value is not None
    return value


def _served_alike(metrics: SimMetrics, runs: Sequence[EngineRun]) -> None:
    served = [s for run in runs for s in run.served]
    assert len(served) == len(ARRIVALS) and all(s.done for s in served)
    ttfts = [s.ttft for s in served]
    gaps = [gap for s in served for gap in s.itl]
    assert _sample(metrics, "vllm:time_to_first_token_seconds_count") == len(ARRIVALS)
    assert _sample(metrics, "vllm:time_to_first_token_seconds_sum") == pytest.approx(sum(ttfts), abs=1e-9)
    assert _sample(metrics, "vllm:inter_token_latency_seconds_count") == len(gaps)
    assert _sample(metrics, "vllm:inter_token_latency_seconds_sum") == pytest.approx(sum(gaps), abs=1e-9)


def _on_the_http_engine(ranks: int) -> SimMetrics:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(_serve_on_the_http_engine(ARRIVALS, ranks))
    finally:
        loop.close()


def test_the_http_engine_and_the_twin_serve_the_same_requests_at_the_same_times() -> None:
    """One scheduler, one step clock: the simulator's asyncio engine on a virtual-time event loop
    observes exactly the TTFTs and inter-token gaps the twin computes."""
    twin = serve(TIMING, ARRIVALS)
    _served_alike(_on_the_http_engine(1), [twin])
    assert max(load.running for load in twin.load) == TIMING.max_num_seqs


def test_a_dp_replica_routes_in_the_twin_as_in_the_http_simulator() -> None:
    """Both send each request to the DP rank vLLM's load balancer picks (sim/data_parallel.py), so
    a replica of two ranks serves the same requests at the same times in both."""
    runs = serve_replica(TIMING, ARRIVALS, 2)
    _served_alike(_on_the_http_engine(2), runs)
    assert [len(run.served) for run in runs] == [3, 3]


def test_a_request_goes_to_the_idle_rank_not_behind_a_long_prefill() -> None:
    """vLLM's DP client picks the rank with the fewest waiting + running requests
    (v1/engine/core_client.py:1786): a short prompt arriving while one rank prefills a long one
    goes to the other and is prefilled at once. Drawn at random it queued behind the long one on
    one seed in two."""
    long, short = Arrival(0.0, 4000, 2), Arrival(0.001, 100, 2)
    first, second = serve_replica(TIMING, [long, short], 2)
    alone = step_ms(StepPlan((Chunk(Seq("b", 100), 0, 100, False),)), TIMING) / 1000
    assert [s.arrival for s in first.served] == [long] and [s.arrival for s in second.served] == [short]
    assert second.served[0].ttft == pytest.approx(alone)


def test_a_request_arriving_mid_step_waits_for_the_step_to_end() -> None:
    """vLLM schedules between steps (vllm/v1/engine/core.py:667-697): a request that arrives while
    one runs joins the next."""
    first, late = Arrival(0.0, 500, 2), Arrival(0.001, 100, 2)
    run = serve(TIMING, [first, late])
    prefill = step_ms(StepPlan((Chunk(Seq("a", 500), 0, 500, False),)), TIMING) / 1000
    both = StepPlan(
        (Chunk(Seq("a", 500, num_generated=1), 500, 1, True), Chunk(Seq("b", 100), 0, 100, False))
    )
    assert run.served[0].first_token == pytest.approx(prefill)
    # Not admitted into the running step: it prefills in the next, beside the first one's decode.
    assert run.served[1].first_token == pytest.approx(prefill + step_ms(both, TIMING) / 1000)


def test_itl_is_the_gap_between_a_requests_consecutive_tokens() -> None:
    """vLLM's inter_token_latency observes, per token after the first, the time since the request's
    previous token (vllm/v1/metrics/stats.py:552-558): alone, each is one decode step."""
    run = serve(TIMING, [Arrival(0.0, 50, 6)])
    decode = step_ms(StepPlan((Chunk(Seq("a", 50, num_generated=1), 50, 1, True),)), TIMING) / 1000
    assert len(run.served[0].itl) == 5
    assert run.served[0].itl[0] == pytest.approx(decode, rel=1e-3)


def test_a_sequence_larger_than_the_kv_cache_is_reported_unfinished() -> None:
    tiny = TIMING.model_copy(update={"kv_capacity_tokens": 64})
    run = serve(tiny, [Arrival(0.0, 100, 2)])
    assert not run.served[0].done and math.isnan(run.served[0].ttft)


def test_a_plan_served_at_twice_its_capacity_overloads_the_twin() -> None:
    workload = next(w for w in REFERENCE_WORKLOADS if w.name == "issue-1")
    request = workload.request(DisaggregationMode.NEVER)
    result = plan(request)
    assert result.max_requests_per_second
    at_plan = measure(request, result, seconds=60)
    over = measure(request, result, seconds=60, rps=2 * result.max_requests_per_second)
    assert at_plan.bounded
    assert not over.bounded and over.ttft_ms > 5 * at_plan.ttft_ms


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 90) == 9 and percentile(values, 100) == 10 and percentile(values, 1) == 1
    assert math.isnan(percentile([], 90))


def test_prompts_under_the_threshold_skip_the_handoff() -> None:
    """The router sends prompts shorter than the threshold to a decode replica alone: with a
    threshold above every prompt, the prefill replicas serve nothing and every request finishes."""
    workload = next(w for w in REFERENCE_WORKLOADS if w.name == "chat-8b")
    request = workload.request(DisaggregationMode.ALWAYS)
    result = plan(request)
    measured = measure(request, result, seconds=20, threshold=10**9)
    prefill = next(load for load in measured.loads if load.role == "prefill")
    assert measured.requests > 0 and measured.unfinished == 0
    assert prefill.running == 0 and prefill.waiting == 0


def test_requests_longer_than_the_context_are_refused_not_served() -> None:
    """vLLM refuses a prompt that, with its output, exceeds max_model_len (v1/engine/
    input_processor.py:587-591); a log-normal's tail draws such prompts. Served, the two of the MoE
    workload of issue #16 (117204 tokens, beyond Qwen3-30B-A3B's 40960) held their prefill engines
    for seconds and made the twin's p90 TTFT 19.6 times the plan's (2.8 now)."""
    workload = next(w for w in REFERENCE_WORKLOADS if w.name == "issue-2")
    request = workload.request(DisaggregationMode.NEVER).model_copy(update={"max_model_len": 6000})
    result = plan(request)
    assert result.feasible, result.reason
    seconds = 30.0
    drawn = [
        a
        for a in poisson_arrivals(request, result.requests_per_second, seconds, random.Random(0))
        if a.at >= seconds * WARMUP_FRACTION
    ]
    too_long = sum(a.prompt_tokens + a.output_tokens > 6000 for a in drawn)
    measured = measure(request, result, seconds=seconds, seed=0)
    assert too_long > 0
    assert measured.refused == too_long and measured.requests == len(drawn) - too_long
    assert measured.goodput(math.inf, math.inf) == pytest.approx(measured.requests / len(drawn))
