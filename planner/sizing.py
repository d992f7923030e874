"""Sizing of the disaggregated roles on candidate layouts.

Decode: the largest batch whose step time stays within the ITL target and whose KV cache fits,
then replicas by Little's law (sequences in flight = arrival rate x output tokens x step time).
Prefill: the highest arrival rate per replica whose TTFT at the SLO percentile (M/G/1 queueing
over the prompt-length distribution, then the prefill itself, the KV handoff and the first decode
step) stays within the target. Among feasible layouts the fewest GPUs win, then the lower cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tandem.planner import cost
from tandem.planner.demand import Demand
from tandem.planner.layouts import Layout
from tandem.planner.model import ModelShape
from tandem.planner.queueing import BISECTION_STEPS, max_utilisation, wait_percentile_ms
from tandem.planner.request import RolePins

# vLLM's largest default max_num_seqs: the batch search stops there.
MAX_NUM_SEQS = 1024
# Share of the KV cache the planned batch may fill: the rest absorbs length variance.
KV_HEADROOM = 0.9


@dataclass(frozen=True)
class Sized:
    """A role sized on one layout."""

    layout: Layout
    replicas: int
    replica_rps: float  # what one replica sustains within the targets
    max_sequences: int  # sequences one replica runs at once
    operating_sequences: float  # sequences per replica at the planned load
    kv_capacity: int
    max_num_batched_tokens: int
    predicted_ttft_ms: float | None = None
    predicted_itl_ms: float | None = None
    prefill_chunk: int = 0  # aggregated: prompt tokens per step
    mean_wait_ms: float = 0.0  # prefill: mean queueing delay at the planned load
    full_step_ms: float = 0.0  # decode: step time at the largest batch, the slowest first token

    @property
    def gpus(self) -> int:
        return self.replicas * self.layout.gpus

    @property
    def cost_per_hour(self) -> float:
        return self.gpus * self.layout.gpu.price_per_hour_usd

    @property
    def max_rps(self) -> float:
        return self.replicas * self.replica_rps


@dataclass(frozen=True)
class Failure:
    """Why a layout cannot serve the role; `floor_ms`, the latency it cannot go below, ranks
    failures (the nearest miss is reported)."""

    reason: str
    floor_ms: float = math.inf


Outcome = Sized | Failure


def largest_true(predicate: Callable[[int], bool], low: int, high: int) -> int:
    """The largest n in [low, high] with predicate(n), for a predicate true up to some n; low - 1 if
    none."""
    if high < low or not predicate(low):
        return low - 1
    while low < high:
        mid = (low + high + 1) // 2
        if predicate(mid):
            low = mid
        else:
            high = mid - 1
    return low


def replicas_for(demand: Demand, replica_rps: float, pins: RolePins, role: str, target: str) -> int | Failure:
    """Replicas needed for the demand, or the pinned count if it suffices."""
    if pins.replicas is None:
        return max(1, math.ceil(demand.rps / replica_rps - 1e-9))
    if pins.replicas * replica_rps < demand.rps * (1 - 1e-9):
        return Failure(
            f"pinned {pins.replicas} {role} replicas sustain {pins.replicas * replica_rps:.2f} requests/s "
            f"within {target}, below the {demand.rps:g} requests/s of the workload",
            # The layout meets the targets; only the pinned count falls short: the nearest miss.
            0.0,
        )
    return pins.replicas


def best(outcomes: Sequence[Outcome]) -> Outcome:
    """The feasible sizing with the fewest GPUs (then lowest cost, then latency), else the failure
    with the lowest latency floor."""
    sized = [o for o in outcomes if isinstance(o, Sized)]
    if sized:
        return min(
            sized, key=lambda s: (s.gpus, s.cost_per_hour, s.predicted_itl_ms or 0, s.predicted_ttft_ms or 0)
        )
    failures = [o for o in outcomes if isinstance(o, Failure)]
    return min(failures, key=lambda f: f.floor_ms) if failures else Failure("no layout to size")


def size_decode(model: ModelShape, layouts: Sequence[Layout], demand: Demand, pins: RolePins) -> Outcome:
    return best([_decode_on(model, layout, demand, pins) for layout in layouts])


def _decode_on(model: ModelShape, layout: Layout, demand: Demand, pins: RolePins) -> Outcome:
    gpu, tp, pp, cal = layout.gpu, layout.tp, layout.pp, layout.calibration
    context = demand.decode_context
    capacity = cost.kv_capacity_tokens(model, gpu, tp, pp, cal)
    replica = layout.cost(model)

    def step(batch: float) -> float:
        return replica.step_ms(batch, context)

    floor = step(1)
    if floor > demand.itl_ms:
        return Failure(
            f"ITL target {demand.itl_ms:g} ms is below the {floor:.1f} ms floor of one decode step for "
            f"{model.name} on {layout.describe()}",
            floor,
        )
    kv_batch = math.floor(KV_HEADROOM * capacity / (pp * context))
    batch = largest_true(lambda b: step(b) <= demand.itl_ms, 1, min(MAX_NUM_SEQS // pp, kv_batch))
    if batch < 1:
        return Failure(
            f"the {capacity}-token KV cache of {layout.describe()} holds no decoding sequence of "
            f"{context:.0f} tokens"
        )
    max_sequences = pp * batch
    replica_rps = 1000 * max_sequences / (demand.output_tokens * step(batch))
    replicas = replicas_for(demand, replica_rps, pins, "decode", f"ITL {demand.itl_ms:g} ms")
    if isinstance(replicas, Failure):
        return replicas
    sequences, peak = sequences_in_flight(demand, replicas, max_sequences, lambda n: step(n / pp))
    return Sized(
        layout=layout,
        replicas=replicas,
        replica_rps=replica_rps,
        max_sequences=max_sequences,
        operating_sequences=sequences,
        kv_capacity=capacity,
        max_num_batched_tokens=max(max_sequences, cost.DEFAULT_MAX_BATCHED_TOKENS),
        predicted_itl_ms=step(max(peak / pp, 1.0)),
        full_step_ms=step(batch),
    )


def sequences_in_flight(
    demand: Demand, replicas: int, limit: int, step_ms: Callable[[float], float]
) -> tuple[float, float]:
    """Sequences one replica decodes at the planned load, and that number at the SLO percentile.

    Little's law: n = arrival rate x output tokens x step_ms(n); the step time grows with n, so
    bisection finds the fixed point in [0, limit]. Arrivals are Poisson, so the count in flight
    varies by about its square root: the percentile adds z sqrt(n).
    """
    load = demand.per_ms(demand.rps / replicas)
    low, high = 0.0, float(limit)
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        if load * demand.output_tokens * step_ms(mid) > mid:
            low = mid
        else:
            high = mid
    return high, min(float(limit), high + demand.z * math.sqrt(high))


def size_prefill(
    model: ModelShape,
    layouts: Sequence[Layout],
    demand: Demand,
    pins: RolePins,
    after_prefill_ms: Callable[[Layout, int], float],
) -> Outcome:
    """`after_prefill_ms(layout, prompt_tokens)`: what TTFT adds after the prefill (KV handoff and
    the first decode step)."""
    return best([_prefill_on(model, layout, demand, pins, after_prefill_ms) for layout in layouts])


def _prefill_on(
    model: ModelShape,
    layout: Layout,
    demand: Demand,
    pins: RolePins,
    after_prefill_ms: Callable[[Layout, int], float],
) -> Outcome:
    gpu, tp, pp, cal = layout.gpu, layout.tp, layout.pp, layout.calibration
    replica = layout.cost(model)

    def prefill(tokens: int) -> float:
        return replica.prefill_ms([tokens])

    # A pipelined replica keeps pp prompts in flight: each occupies it for 1/pp of its latency.
    occupancy = [prefill(tokens) / pp for tokens in demand.computed.points]
    mean_service = sum(occupancy) / len(occupancy)
    second_moment = sum(s * s for s in occupancy) / len(occupancy)
    prompt_p = demand.prompt.quantile(demand.percentile)
    unqueued = prefill(demand.computed.quantile(demand.percentile)) + after_prefill_ms(layout, prompt_p)
    budget = demand.ttft_ms - unqueued
    utilisation = max_utilisation(mean_service, second_moment, demand.percentile, budget)
    if utilisation <= 0:
        return Failure(
            f"TTFT target {demand.ttft_ms:g} ms is below the {unqueued:.0f} ms floor of prefilling a "
            f"p{demand.percentile:g} prompt of {prompt_p} tokens on {layout.describe()} and handing its KV "
            "cache to decode",
            unqueued,
        )
    replica_rps = 1000 * utilisation / mean_service
    replicas = replicas_for(demand, replica_rps, pins, "prefill", f"TTFT {demand.ttft_ms:g} ms")
    if isinstance(replicas, Failure):
        return replicas
    load = demand.per_ms(demand.rps / replicas)
    rho = load * mean_service
    batched = max(cost.DEFAULT_MAX_BATCHED_TOKENS, demand.prompt.longest)
    return Sized(
        layout=layout,
        replicas=replicas,
        replica_rps=replica_rps,
        max_sequences=max(1, batched // max(1, round(demand.prompt.mean))),
        operating_sequences=rho,
        kv_capacity=cost.kv_capacity_tokens(model, gpu, tp, pp, cal, batched),
        max_num_batched_tokens=batched,
        predicted_ttft_ms=wait_percentile_ms(rho, mean_service, second_moment, demand.percentile) + unqueued,
        mean_wait_ms=load * second_moment / (2 * (1 - rho)),
    )
