"""Sizing of aggregated replicas: each prefills and decodes, with chunked prefill.

An engine step decodes a batch of B sequences and prefills up to k prompt tokens next to them; k
is the largest chunk that keeps the step within the ITL target. In steady state (Little's law) a
step carries on average B x prompt / output prompt tokens, so decode sustains
B / (output x step(B, that average)) requests per ms. A waiting prompt gets the full chunk each
step, so prefill is a queue whose service time is (L / k) steps; M/G/1 at the SLO percentile turns
that into the highest rate whose TTFT stays within target. The decode rate grows with B and the
prefill rate falls, so the best B is where they cross; bisection finds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tandem.planner import cost
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
    Sized,
    best,
    largest_true,
    replicas_for,
    sequences_in_flight,
)

# Largest prefill chunk considered (vLLM's long-prefill budgets stay well below).
MAX_CHUNK = 16384


@dataclass(frozen=True)
class _Operating:
    """One batch size of an aggregated replica: its chunk and the rates it sustains."""

    batch: int
    chunk: int
    decode_rps: float
    prefill_rps: float
    mean_service_ms: float
    second_moment_ms2: float
    unqueued_ms: float

    @property
    def rps(self) -> float:
        return min(self.decode_rps, self.prefill_rps)

    @property
    def decode_bound(self) -> bool:
        return self.decode_rps < self.prefill_rps


class _Replica:
    """Step times of one aggregated layout for the demand's contexts."""

    def __init__(self, model: ModelShape, layout: Layout, demand: Demand) -> None:
        self.layout, self.demand = layout, demand
        self.cost = layout.cost(model)
        self._operating: dict[int, _Operating] = {}

    def step(self, batch: float, chunk: float) -> float:
        return self.cost.step_ms(
            batch, self.demand.decode_context, chunk, self.demand.computed.attention_span
        )

    def steady_chunk(self, batch: float, chunk: int) -> float:
        """Prompt tokens an average step carries when `batch` sequences decode in steady state."""
        return min(float(chunk), batch * self.demand.computed.mean / self.demand.output_tokens)

    def largest_chunk(self, batch: int) -> int:
        return max(0, largest_true(lambda k: self.step(batch, k) <= self.demand.itl_ms, 1, MAX_CHUNK))

    def operating(self, batch: int) -> _Operating:
        """The rates at `batch` (the search asks for some batches twice: computed once)."""
        if batch not in self._operating:
            self._operating[batch] = self._rates(batch)
        return self._operating[batch]

    def _rates(self, batch: int) -> _Operating:
        demand, pp = self.demand, self.layout.pp
        chunk = self.largest_chunk(batch)
        average_step = self.step(batch, self.steady_chunk(batch, chunk))
        decode_rps = 1000 * pp * batch / (demand.output_tokens * average_step)
        if chunk == 0:
            return _Operating(batch, 0, decode_rps, 0.0, math.inf, math.inf, math.inf)
        full_step = self.step(batch, chunk)
        # pp micro-batches each carry a chunk: a prompt occupies the replica L / (k pp) full steps.
        services = [tokens / (chunk * pp) * full_step for tokens in demand.computed.points]
        mean_service = sum(services) / len(services)
        second_moment = sum(s * s for s in services) / len(services)
        unqueued = math.ceil(demand.computed.quantile(demand.percentile) / chunk) * full_step
        budget = demand.ttft_ms - unqueued
        utilisation = max_utilisation(mean_service, second_moment, demand.percentile, budget)
        prefill_rps = 1000 * utilisation / mean_service
        return _Operating(batch, chunk, decode_rps, prefill_rps, mean_service, second_moment, unqueued)


def size_aggregated(model: ModelShape, layouts: Sequence[Layout], demand: Demand, pins: RolePins) -> Outcome:
    return best([_aggregated_on(model, layout, demand, pins) for layout in layouts])


def _aggregated_on(model: ModelShape, layout: Layout, demand: Demand, pins: RolePins) -> Outcome:
    replica = _Replica(model, layout, demand)
    gpu, tp, pp, cal = layout.gpu, layout.tp, layout.pp, layout.calibration
    floor = replica.step(1, 1)
    if floor > demand.itl_ms:
        return Failure(
            f"ITL target {demand.itl_ms:g} ms is below the {floor:.1f} ms floor of a decode step that also "
            f"prefills (chunked prefill) for {model.name} on {layout.describe()}",
            floor,
        )
    capacity = cost.kv_capacity_tokens(model, gpu, tp, pp, cal)
    kv_batch = math.floor(KV_HEADROOM * capacity / (pp * demand.decode_context))
    top = largest_true(lambda b: replica.step(b, 1) <= demand.itl_ms, 1, min(MAX_NUM_SEQS // pp, kv_batch))
    if top < 1:
        return Failure(f"the {capacity}-token KV cache of {layout.describe()} holds no decoding sequence")
    # The last batch that is still decode-bound, or the first that is not: the better of the two.
    crossing = largest_true(lambda b: replica.operating(b).decode_bound, 1, top)
    candidates = {max(1, crossing), min(top, crossing + 1)}
    chosen = max((replica.operating(b) for b in candidates), key=lambda o: o.rps)
    if chosen.prefill_rps <= 0:
        return Failure(
            f"TTFT target {demand.ttft_ms:g} ms is below the {chosen.unqueued_ms:.0f} ms floor of "
            f"prefilling a p{demand.percentile:g} prompt in {chosen.chunk}-token chunks between decode "
            f"steps on {layout.describe()}",
            chosen.unqueued_ms,
        )
    targets = f"TTFT {demand.ttft_ms:g} ms and ITL {demand.itl_ms:g} ms"
    replicas = replicas_for(demand, chosen.rps, pins, "aggregated", targets)
    if isinstance(replicas, Failure):
        return replicas
    return _sized(replica, chosen, replicas, capacity)


def _sized(replica: _Replica, chosen: _Operating, replicas: int, capacity: int) -> Sized:
    demand, layout = replica.demand, replica.layout
    pp, chunk = layout.pp, chosen.chunk
    max_sequences = pp * chosen.batch

    def step(sequences: float) -> float:
        batch = sequences / pp
        return replica.step(batch, replica.steady_chunk(batch, chunk))

    sequences, peak = sequences_in_flight(demand, replicas, max_sequences, step)
    peak_batch = max(peak / pp, 1.0)
    load = demand.per_ms(demand.rps / replicas)
    rho = load * chosen.mean_service_ms
    # At the percentile a step carries a full chunk if prefill work is pending that often.
    full = rho > 1 - demand.percentile / 100
    itl = replica.step(peak_batch, chunk if full else replica.steady_chunk(peak_batch, chunk))
    wait = wait_percentile_ms(rho, chosen.mean_service_ms, chosen.second_moment_ms2, demand.percentile)
    return Sized(
        layout=layout,
        replicas=replicas,
        replica_rps=chosen.rps,
        max_sequences=max_sequences,
        operating_sequences=sequences,
        kv_capacity=capacity,
        max_num_batched_tokens=chunk + chosen.batch,
        predicted_ttft_ms=wait + chosen.unqueued_ms,
        predicted_itl_ms=itl,
        prefill_chunk=chunk,
    )
