"""Sizing of aggregated replicas: each prefills and decodes, with chunked prefill, as vLLM's V1
scheduler runs them.

vLLM fills every step up to a token budget N (`max_num_batched_tokens`): each running decode takes
one token, prompts take what is left, first come first served (chunked prefill), and at most
`max_num_seqs` sequences run (vllm/v1/core/sched/scheduler.py:795-1072). So a step that carries
prefill is *full* (N - D prompt tokens beside its D decodes) and one that does not decodes alone.
Prefill is then a single queue in prompt tokens: a prompt of L tokens occupies L / (N - D) full
steps, whose attention grows along the prompt (the last chunk of a long prompt attends to all of
it). M/G/1 at the SLO percentile turns those service times into the highest rate whose TTFT stays
within target; the TTFT predicted takes the replicas as the router's one queue (M/G/c,
planner/queueing.py).

The sizing designs for a batch B: the chunk k = N - B is the largest that keeps a full step of B
decodes within the ITL target. Decode sustains the rate at which Little's law holds B sequences in
flight, each getting a token per step, where the mean step mixes full steps (a share rho of the
time, the prefill utilisation) and decode-only ones. Decode's rate grows with B and prefill's falls,
so the best B is where they cross; bisection finds it. `max_num_seqs` is not B but the most
sequences a full step holds within the ITL target: the count in flight swings well above its mean
as prompts come in bursts, and a cap at B would turn the peaks away at admission (a queue the TTFT
model does not have).

The predicted ITL is the SLO percentile of the step times a decoding sequence sees: full steps at
their chunk's attention span, the partial last chunk of a prompt that nothing queues behind, and
decode-only steps, each counted by how often it occurs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tandem.planner.demand import Demand
from tandem.planner.layouts import Layout
from tandem.planner.model import ModelShape
from tandem.planner.queueing import max_utilisation, wait_percentile_ms
from tandem.planner.request import RolePins
from tandem.planner.sizing import (
    KV_HEADROOM,
    MAX_NUM_SEQS,
    Failure,
    Outcome,
    Rank,
    Sized,
    best_design,
    cheapest_first,
    largest_true,
    mean_within,
    rank_floor,
    replicas_for,
    sequences_in_flight,
)

# Largest prefill chunk considered (vLLM's long-prefill budgets stay well below).
MAX_CHUNK = 16384
# Rounds of substitution that settle the operating point (sequences in flight <-> step mix).
OPERATING_ROUNDS = 3
# Full steps of one prompt timed for the ITL percentile: longer prompts are sampled along their length.
SPAN_SAMPLES = 32


@dataclass(frozen=True)
class _Prompts:
    """Prompts as a queue at one decode batch and chunk: the moments of their service times, and
    the latency of the SLO percentile's prompt once its turn comes (its chunks' steps)."""

    mean_ms: float
    second_moment_ms2: float
    latency_ms: float

    def ttft_ms(self, rho: float, percentile: float, replicas: int = 1) -> float:
        """Wait and latency at the percentile, added (queueing.py says why); `replicas` behind the
        router are one queue."""
        wait = wait_percentile_ms(rho, self.mean_ms, self.second_moment_ms2, percentile, replicas)
        return wait + self.latency_ms

    def max_utilisation(self, percentile: float, target_ms: float) -> float:
        budget = target_ms - self.latency_ms
        return max_utilisation(self.mean_ms, self.second_moment_ms2, percentile, budget)


@dataclass(frozen=True)
class _Operating:
    """One design batch of an aggregated replica: its chunk, step times and the rates it sustains."""

    batch: int
    chunk: int
    decode_rps: float
    prefill_rps: float
    prompts: _Prompts

    @property
    def rps(self) -> float:
        return min(self.decode_rps, self.prefill_rps)

    @property
    def decode_bound(self) -> bool:
        return self.decode_rps < self.prefill_rps


def mean_step_ms(rho: float, full_ms: float, decode_ms: float) -> float:
    """The mean step time when a share `rho` of the time runs full steps and the rest decode-only
    ones (a step-weighted mean: a decoding sequence gets one token per step)."""
    busy = min(max(rho, 0.0), 1.0)
    return 1 / (busy / full_ms + (1 - busy) / decode_ms)


class _Replica:
    """Step times of one aggregated layout for the demand's contexts."""

    def __init__(self, model: ModelShape, layout: Layout, demand: Demand) -> None:
        self.layout, self.demand = layout, demand
        self.cost = layout.cost(model)
        self._operating: dict[int, _Operating] = {}
        self._design_span = demand.computed.span_quantile(demand.percentile)
        self._context = demand.decode_context
        self._mean_span = demand.computed.attention_span

    def step(self, batch: float, chunk: float, span: float | None = None) -> float:
        """A step of `batch` decodes and `chunk` prompt tokens attending to `span` keys on average
        (default: the prompts' token-weighted mean)."""
        return self.cost.step_ms(batch, self._context, chunk, self._mean_span if span is None else span)

    def steps(self, batch: float, chunk: float, spans: Sequence[float]) -> list[float]:
        """`step` at each of `spans`, at one batch and chunk."""
        return self.cost.steps_ms(batch, self._context, chunk, spans)

    def largest_chunk(self, batch: int) -> int:
        """The largest chunk whose full step meets the ITL target when its tokens attend to as many
        keys as the SLO percentile of prompt tokens do: where full steps set the ITL percentile,
        their slower share comes from the late chunks of long prompts."""
        span = self._design_span
        return max(0, largest_true(lambda k: self.step(batch, k, span) <= self.demand.itl_ms, 1, MAX_CHUNK))

    def service_ms(self, batch: float, chunk: int) -> list[tuple[float, float]]:
        """(ms, probability) for the prompts the replica takes (Demand.served_prompts): a prompt of
        L computed tokens holds the replica for L / (chunk pp) full steps (pp micro-batches each
        carry a chunk) whose chunks attend to L / 2 keys on average.

        A full step's time is affine in the span wherever compute bounds it (checked at the
        middle), so three steps time all the prompts; otherwise each is timed."""
        nodes = [
            (tokens, weight)
            for _, tokens, weight in self.demand.served_prompts(1 - self.demand.reuse.fraction)
        ]
        points = [tokens for tokens, _ in nodes]
        low, high = min(points) / 2, max(points) / 2
        at_low, at_high, middle = self.steps(batch, chunk, (low, high, (low + high) / 2))
        if high > low and abs(middle - (at_low + at_high) / 2) <= 1e-9 * middle:
            slope = (at_high - at_low) / (high - low)
            steps = [at_low + slope * (tokens / 2 - low) for tokens in points]
        else:
            steps = self.steps(batch, chunk, [tokens / 2 for tokens in points])
        return [
            (tokens / (chunk * self.layout.parallel_batches) * ms, weight)
            for (tokens, weight), ms in zip(nodes, steps, strict=True)
        ]

    def prompts(self, batch: float, chunk: int, rho: float) -> _Prompts:
        """The prompt queue at `batch` decodes, `chunk` prompt tokens a full step and prefill
        utilisation `rho` (the chance that another prompt queues behind one)."""
        demand = self.demand
        services = self.service_ms(batch, chunk)
        return _Prompts(
            mean_ms=sum(s * w for s, w in services),
            second_moment_ms2=sum(s * s * w for s, w in services),
            latency_ms=self.latency_ms(batch, chunk, rho, demand.computed.quantile(demand.percentile)),
        )

    def latency_ms(self, batch: float, chunk: int, rho: float, tokens: int) -> float:
        """From a prompt's arrival at an idle prefill queue to its first token.

        It joins at the end of the decode step in progress (vLLM schedules between steps), then
        runs ceil(L / chunk) steps: full ones along its length, the last with the rest of it, a full
        step if another prompt queues behind (chance rho: it takes the rest of the budget), else a
        step of its own."""
        full = math.ceil(tokens / chunk) - 1
        rest = tokens - full * chunk
        span = full * chunk + rest / 2
        last = rho * self.step(batch, chunk, span) + (1 - rho) * self.step(batch, rest, span)
        along = full * self.step(batch, chunk, full * chunk / 2) if full else 0.0
        return (1 - rho) * self.step(batch, 0) / 2 + along + last

    def operating(self, batch: int) -> _Operating:
        """The rates at `batch` (the search asks for some batches twice: computed once)."""
        if batch not in self._operating:
            self._operating[batch] = self._rates(batch)
        return self._operating[batch]

    def _rates(self, batch: int) -> _Operating:
        demand, pp = self.demand, self.layout.parallel_batches
        chunk = self.largest_chunk(batch)
        decode_step = self.step(batch, 0)
        if chunk == 0:
            rps = 1000 * pp * batch / (demand.output_tokens * decode_step)
            return _Operating(batch, 0, rps, 0.0, _Prompts(math.inf, math.inf, math.inf))
        # Sized for the worst of the queue: every prompt's last step full (another one behind it).
        prompts = self.prompts(batch, chunk, 1.0)
        prefill_rps = 1000 * prompts.max_utilisation(demand.percentile, demand.ttft_ms) / prompts.mean_ms
        held = mean_within(pp * batch, demand.z)
        full_step = self.step(batch, chunk)
        decode_rps = 1000 * self._rate_holding(held, prompts.mean_ms, full_step, decode_step)
        return _Operating(batch, chunk, decode_rps, prefill_rps, prompts)

    def _rate_holding(self, sequences: float, mean_service: float, full: float, decode: float) -> float:
        """Arrivals per ms at which Little's law holds `sequences` in flight: n = rate x output x
        mean step, the mean step mixing full steps (share rho = rate x mean service) and
        decode-only ones; solved for the rate."""
        output = self.demand.output_tokens
        rate = sequences * full / (output * full * decode + sequences * mean_service * (full - decode))
        if rate * mean_service <= 1:
            return rate
        return sequences / (output * full)  # prefill never rests: every step is full

    def itl_percentile_ms(self, batch: float, chunk: int, load: float, rho: float) -> float:
        """The SLO percentile of the step times that `batch` decoding sequences see at `load`
        arrivals per ms and prefill utilisation `rho`.

        Every quantile point's prompt runs floor(L / chunk) full steps along its length; its remainder
        either fills part of a full step (when a prompt queues behind it, probability rho) or a step
        of its own. Decode-only steps fill the rest of the time. Steps are counted per ms, each
        giving every decoding sequence one token."""
        points = self.demand.computed.points
        per_point = load / (len(points) * self.layout.parallel_batches)
        steps: list[tuple[float, float]] = []  # (step ms, steps per ms)
        for tokens in points:
            full = tokens // chunk
            spans = [(j + 0.5) * chunk for j in range(full)]
            if full > SPAN_SAMPLES:
                spans = [(j + 0.5) * full / SPAN_SAMPLES * chunk for j in range(SPAN_SAMPLES)]
            rest = tokens - full * chunk
            last = full * chunk + rest / 2  # the span of the remainder's chunk
            timed = self.steps(batch, chunk, [*spans, last] if rest else spans)
            steps += [(ms, per_point * full / len(spans)) for ms in timed[: len(spans)]]
            if rest:
                steps.append((timed[-1], per_point * rho * rest / chunk))
                steps.append((self.step(batch, rest, last), per_point * (1 - rho)))
        busy = sum(ms * n for ms, n in steps)
        decode = self.step(batch, 0)
        steps.append((decode, max(0.0, 1 - busy) / decode))
        steps.sort()
        target = sum(n for _, n in steps) * self.demand.percentile / 100
        seen = 0.0
        for ms, n in steps:
            seen += n
            if seen >= target:
                return ms
        return steps[-1][0]


@dataclass(frozen=True)
class _Design:
    """A layout's design point and replica count, before the latencies at the planned load."""

    replica: _Replica
    chosen: _Operating
    replicas: int
    capacity: int
    top: int

    @property
    def rank(self) -> Rank:
        """What the choice of layout looks at first (sizing.best): GPUs, then cost."""
        return rank_floor(self.replica.layout, self.replicas)

    def sized(self) -> Sized:
        return _sized(self)


def size_aggregated(model: ModelShape, layouts: Sequence[Layout], demand: Demand, pins: RolePins) -> Outcome:
    """The best layout; the latencies at the planned load (the dearest part) are worked out only
    for the layouts that tie on GPUs and cost, where they break the tie."""
    return best_design(cheapest_first(layouts, lambda layout: _design(model, layout, demand, pins), pins))


def _design(model: ModelShape, layout: Layout, demand: Demand, pins: RolePins) -> _Design | Failure:
    replica = _Replica(model, layout, demand)
    pp = layout.pp
    floor = replica.step(1, 1)
    if floor > demand.itl_ms:
        return Failure(
            f"ITL target {demand.itl_ms:g} ms is below the {floor:.1f} ms floor of a decode step that also "
            f"prefills (chunked prefill) for {model.name} on {layout.describe()}",
            floor,
        )
    capacity = layout.kv_capacity_tokens(model)
    kv_batch = min(MAX_NUM_SEQS // pp, math.floor(KV_HEADROOM * capacity / (pp * demand.decode_context)))
    top = largest_true(lambda b: replica.step(b, 1) <= demand.itl_ms, 1, kv_batch)
    if top < 1:
        return Failure(f"the {capacity}-token KV cache of {layout.describe()} holds no decoding sequence")
    # The last batch that is still decode-bound, or the first that is not: the better of the two.
    crossing = largest_true(lambda b: replica.operating(b).decode_bound, 1, top)
    candidates = {max(1, crossing), min(top, crossing + 1)}
    chosen = max((replica.operating(b) for b in candidates), key=lambda o: o.rps)
    if chosen.prefill_rps <= 0:
        floor = chosen.prompts.ttft_ms(0.0, demand.percentile)
        return Failure(
            f"TTFT target {demand.ttft_ms:g} ms is below the {floor:.0f} ms floor of prefilling a "
            f"p{demand.percentile:g} prompt in {chosen.chunk}-token chunks between decode steps on "
            f"{layout.describe()}",
            floor,
        )
    targets = f"TTFT {demand.ttft_ms:g} ms and ITL {demand.itl_ms:g} ms"
    replicas = replicas_for(demand, chosen.rps, pins, "aggregated", targets)
    if isinstance(replicas, Failure):
        return replicas
    return _Design(replica, chosen, replicas, capacity, top)


def _sized(design: _Design) -> Sized:
    """The replicas at the planned load. `top`: the most sequences a decode-only step holds within
    the ITL target and the KV cache, the seats (vLLM needs max_num_batched_tokens >= max_num_seqs:
    vllm/config/scheduler.py:331).

    The design batch sets the token budget; at the planned load fewer sequences may decode, which
    leaves more of the budget to prompts: the latencies are those of the operating point, where
    Little's law, the step mix and the prefill queue agree (a few rounds of substitution)."""
    replica, chosen, replicas = design.replica, design.chosen, design.replicas
    demand, layout = replica.demand, replica.layout
    pp = layout.parallel_batches
    budget = chosen.chunk + chosen.batch
    seats = min(design.top, budget)
    load = demand.per_ms(demand.rps / replicas)
    sequences, peak = float(pp * chosen.batch), float(pp * chosen.batch)
    for _ in range(OPERATING_ROUNDS):
        batch = max(sequences / pp, 1.0)
        chunk = max(1, round(budget - batch))
        queue = replica.prompts(batch, chunk, 0.0)
        rho = load * queue.mean_ms
        prompts = replace(
            queue,
            latency_ms=replica.latency_ms(batch, chunk, rho, demand.computed.quantile(demand.percentile)),
        )

        def step(n: float, rho: float = rho) -> float:
            b = n / pp
            return mean_step_ms(rho, replica.step(b, max(budget - b, 0.0)), replica.step(b, 0))

        sequences, peak = sequences_in_flight(demand, replicas, pp * seats, step)
    peak_batch = max(peak / pp, 1.0)
    return Sized(
        layout=layout,
        replicas=replicas,
        replica_rps=chosen.rps,
        max_sequences=pp * seats,
        operating_sequences=sequences,
        kv_capacity=design.capacity,
        max_num_batched_tokens=budget,
        predicted_ttft_ms=prompts.ttft_ms(rho, demand.percentile, replicas),
        predicted_itl_ms=replica.itl_percentile_ms(peak_batch, max(1, round(budget - peak_batch)), load, rho),
        prefill_chunk=chosen.chunk,
    )
