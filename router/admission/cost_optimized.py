"""`cost-optimized`: the least predicted GPU time first, with aging so that nothing starves.

A request's key is its arrival plus `AGING` times its predicted GPU seconds (`GpuTime`: the
prompt's prefill and the answer's share of the decode steps, on the pool's planned engine timing).
So a shorter request overtakes a longer one that arrived at most `AGING` x the difference of their
GPU times earlier, and a request that has waited `AGING` x its own GPU time is overtaken by no
newcomer: every wait is bounded (shortest-job-first, aged). The key is fixed on arrival, so the
queue stays a heap: O(log n) a request.
"""

from __future__ import annotations

from tandem.router.admission.base import Admission, Need, Ticket

AGING = 10.0  # seconds of waiting that make up for one second of predicted GPU time


class CostOptimized(Admission):
    needs = frozenset({Need.GPU_TIME})

    def key(self, ticket: Ticket) -> float:
        return ticket.arrival + AGING * ticket.gpu_s
