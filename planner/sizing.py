"""Sizing of the disaggregated roles on candidate layouts.

Decode: the largest batch whose step time stays within the ITL target and whose KV cache fits,
then replicas by Little's law (sequences in flight = arrival rate x output tokens x step time).
Prefill: the highest arrival rate per replica whose TTFT at the SLO percentile (M/G/1 queueing
over the prompt-length distribution, then the prefill itself, the KV handoff and the first decode
step) stays within the target; the TTFT predicted takes the replicas as the router's one queue
(M/G/c, planner/queueing.py). Among feasible layouts the fewest GPUs win, then the lower cost.

A layout is sized only while it can still win: its replicas (one, or the pinned count) take a GPU
count and cost that bound any sizing of it from below, and once a sizing ranks below that bound
the layout is left out (`cheapest_first`); the latencies at the planned load, which only break ties
of GPUs and cost, are worked out for the tied layouts alone (`best_design`). The choice is the
one over every layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tandem.planner import cost
from tandem.planner.demand import Demand
from tandem.planner.layouts import Layout
from tandem.planner.model import ModelShape
from tandem.planner.prefix_reuse import ReuseSplit
from tandem.planner.queueing import BISECTION_STEPS, max_utilisation, mean_wait_ms, wait_percentile_ms
from tandem.planner.request import RolePins

# vLLM's largest default max_num_seqs: the batch search stops there.
MAX_NUM_SEQS = 1024
# Share of the KV cache the planned batch may fill: the rest absorbs length variance.
KV_HEADROOM = 0.9

# What the choice of layout looks at first: GPUs, then cost per hour.
Rank = tuple[int, float]


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
    # prefill: a percentile handoff's hold in a decoder's PD buffer, admission to the decode leg's
    # read (planner/pd_buffer.py), its wait taken as if each replica queued alone.
    handoff_hold_ms: float = 0.0
    full_step_ms: float = 0.0  # decode: step time at the largest batch, the slowest first token
    reuse: ReuseSplit = field(default_factory=ReuseSplit)  # prefill: where reused prefixes are found
    prefill_ms: float = 0.0  # prefill: a percentile prompt's prefill, reused prefixes loaded or hit
    recompute_prefill_ms: float = 0.0  # prefill: the same prompt computed whole

    @property
    def gpus(self) -> int:
        return self.replicas * self.layout.gpus

    @property
    def cost_per_hour(self) -> float:
        return self.gpus * self.layout.gpu.price_per_hour_usd

    @property
    def max_rps(self) -> float:
        return self.replicas * self.replica_rps

    @property
    def rank(self) -> Rank:
        return self.gpus, self.cost_per_hour

    def sized(self) -> Sized:
        """A sizing is its own design (Design): it has its latencies already."""
        return self


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
        return min(sized, key=lambda s: (*s.rank, s.predicted_itl_ms or 0, s.predicted_ttft_ms or 0))
    failures = [o for o in outcomes if isinstance(o, Failure)]
    return min(failures, key=lambda f: f.floor_ms) if failures else Failure("no layout to size")


def rank_floor(layout: Layout, replicas: int) -> Rank:
    """The lowest rank `replicas` replicas of `layout` can have: their GPUs and those GPUs' cost."""
    gpus = replicas * layout.gpus
    return gpus, gpus * layout.gpu.price_per_hour_usd


class Design(Protocol):
    """A layout sized as far as its rank (its replicas, their GPUs and cost); `sized` adds the
    latencies at the planned load, which only break ties of rank (sizing.best)."""

    @property
    def rank(self) -> Rank: ...

    def sized(self) -> Sized: ...


D = TypeVar("D", bound=Design)


def cheapest_first(
    layouts: Sequence[Layout], design: Callable[[Layout], D | Failure], pins: RolePins
) -> list[D | Failure]:
    """`design` of each layout that can still rank first, in the order of `layouts`: the layouts are
    designed from the lowest rank floor (rank_floor at the fewest replicas the role may have) up,
    and once a feasible design ranks below a layout's floor, that layout and the rest cannot win
    and are left out. A design takes at least one replica (replicas_for), or the pinned count.
    Where none is feasible every layout is designed (the nearest miss is reported)."""
    replicas = 1 if pins.replicas is None else pins.replicas
    floors = [rank_floor(layout, replicas) for layout in layouts]
    designs: dict[int, D | Failure] = {}
    lowest: Rank | None = None
    for i in sorted(range(len(layouts)), key=floors.__getitem__):
        if lowest is not None and floors[i] > lowest:
            break  # the floors that follow are no lower
        designs[i] = found = design(layouts[i])
        if not isinstance(found, Failure) and (lowest is None or found.rank < lowest):
            lowest = found.rank
    return [designs[i] for i in sorted(designs)]


def best_design(designs: Sequence[Design | Failure]) -> Outcome:
    """`best` of the designs: only those of the lowest rank are sized at the planned load (the
    dearest part), where their latencies break the tie; else the nearest failure."""
    feasible = [d for d in designs if not isinstance(d, Failure)]
    if not feasible:
        return best([d for d in designs if isinstance(d, Failure)])
    cheapest = min(d.rank for d in feasible)
    return best([d.sized() for d in feasible if d.rank == cheapest])


def size_decode(model: ModelShape, layouts: Sequence[Layout], demand: Demand, pins: RolePins) -> Outcome:
    return best_design(cheapest_first(layouts, lambda layout: _decode_on(model, layout, demand, pins), pins))


@dataclass(frozen=True)
class _Decode:
    """A decode layout's batch and replicas, before the sequences and ITL at the planned load."""

    layout: Layout
    replica: cost.ReplicaCost
    demand: Demand
    batch: int
    replicas: int
    replica_rps: float
    capacity: int

    @property
    def rank(self) -> Rank:
        return rank_floor(self.layout, self.replicas)

    def step(self, batch: float) -> float:
        return self.replica.step_ms(batch, self.demand.decode_context)

    def sized(self) -> Sized:
        layout, batch, batches = self.layout, self.batch, self.layout.parallel_batches
        max_sequences = batches * batch
        sequences, peak = sequences_in_flight(
            self.demand, self.replicas, max_sequences, lambda n: self.step(n / batches)
        )
        return Sized(
            layout=layout,
            replicas=self.replicas,
            replica_rps=self.replica_rps,
            max_sequences=max_sequences,
            operating_sequences=sequences,
            kv_capacity=self.capacity,
            max_num_batched_tokens=max(layout.pp * batch, cost.DEFAULT_MAX_BATCHED_TOKENS),
            predicted_itl_ms=self.step(max(peak / batches, 1.0)),
            full_step_ms=self.step(batch),
        )


def _decode_on(model: ModelShape, layout: Layout, demand: Demand, pins: RolePins) -> _Decode | Failure:
    pp, batches = layout.pp, layout.parallel_batches
    context = demand.decode_context
    capacity = layout.kv_capacity_tokens(model)
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
    replica_rps = 1000 * mean_within(batches * batch, demand.z) / (demand.output_tokens * step(batch))
    replicas = replicas_for(demand, replica_rps, pins, "decode", f"ITL {demand.itl_ms:g} ms")
    if isinstance(replicas, Failure):
        return replicas
    return _Decode(layout, replica, demand, batch, replicas, replica_rps, capacity)


def mean_within(limit: float, z: float) -> float:
    """The mean count in flight whose percentile n + z sqrt(n) (Poisson arrivals) is `limit`.

    A role sized so that its mean fills `limit` seats would run at the limit half the time: its
    step times above the target and arrivals waiting for a seat (vLLM admits while fewer than
    max_num_seqs run: vllm/v1/core/sched/scheduler.py:1072). The percentile is held to it instead.
    """
    root = (math.sqrt(z * z + 4 * limit) - z) / 2
    return root * root


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


class AfterPrefill(Protocol):
    """What TTFT adds after a prefill of `tokens` prompt tokens on a prefill layout: the KV handoff
    and the decode's first token (planner/handoff.py)."""

    def after_prefill_ms(self, prefill: Layout, tokens: int) -> float:
        """The bound the sizing holds to, whatever the load."""
        ...

    def expected_after_prefill_ms(self, prefill: Layout, tokens: int) -> float:
        """At the planned load: what the plan predicts."""
        ...


def size_prefill(
    model: ModelShape, layouts: Sequence[Layout], demand: Demand, pins: RolePins, after: AfterPrefill
) -> Outcome:
    return best_design(
        cheapest_first(layouts, lambda layout: _prefill_on(model, layout, demand, pins, after), pins)
    )


def _prefill_on(
    model: ModelShape, layout: Layout, demand: Demand, pins: RolePins, after: AfterPrefill
) -> Outcome:
    replica = layout.cost(model)
    batched = max(cost.DEFAULT_MAX_BATCHED_TOKENS, demand.prompt.longest)
    kv_capacity = layout.kv_capacity_tokens(model, batched)
    # Reused prefixes come from the GPU cache the batch leaves free, the offload tiers, or are
    # recomputed (planner/prefix_reuse.py); a tier's load blocks the replica as its prefill does.
    reuse = demand.reuse.split(model, layout, kv_capacity - batched)
    share = demand.reuse.computed_share(reuse)
    computed = demand.prefilled(share)
    load_ms_per_prompt_token = demand.reuse.fraction * reuse.load_ms_per_token

    def prefill(prompt: int, tokens: int) -> float:
        return replica.prefill_ms([tokens]) + prompt * load_ms_per_prompt_token

    # A pipelined replica keeps pp prompts in flight, one with DP ranks one per rank: each occupies
    # it for 1/(pp dp) of its latency. The moments are the served prompts' (Demand.served_prompts).
    occupancy = [
        (prefill(prompt, tokens) / layout.parallel_batches, weight)
        for prompt, tokens, weight in demand.served_prompts(share)
    ]
    if not occupancy:
        return Failure(f"no prompt of the workload fits the {demand.max_model_len}-token context")
    mean_service = sum(s * w for s, w in occupancy)
    second_moment = sum(s * s * w for s, w in occupancy)
    prompt_p = demand.prompt.quantile(demand.percentile)
    prefill_p = prefill(prompt_p, computed.quantile(demand.percentile))
    unqueued = prefill_p + after.after_prefill_ms(layout, prompt_p)
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
    latency = prefill_p + after.expected_after_prefill_ms(layout, prompt_p)
    return Sized(
        layout=layout,
        replicas=replicas,
        replica_rps=replica_rps,
        max_sequences=max(1, batched // max(1, round(demand.prompt.mean))),
        operating_sequences=rho,
        kv_capacity=kv_capacity,
        max_num_batched_tokens=batched,
        # The router's replicas are one queue (queueing.py).
        predicted_ttft_ms=wait_percentile_ms(rho, mean_service, second_moment, demand.percentile, replicas)
        + latency,
        mean_wait_ms=mean_wait_ms(rho, mean_service, second_moment, replicas),
        handoff_hold_ms=wait_percentile_ms(rho, mean_service, second_moment, demand.percentile) + latency,
        reuse=reuse,
        prefill_ms=prefill_p,
        recompute_prefill_ms=replica.prefill_ms([prompt_p]),
    )
