"""Whether one request met its pool's latency targets: the verdict the load generator and the
router's SLO counter share, so an attainment reads the same whichever measured it.

A request meets the SLO when it succeeded, its time to first token is within ``ttft_ms`` and its
inter-token latency (whichever statistic the caller judges: the router and ``tandem load`` by
default take the request's mean per token after the first, TPOT, as ``vllm bench serve --goodput``)
is within ``itl_ms``. A request of one token has no gap: no ITL target can miss it.
"""

from __future__ import annotations

from enum import StrEnum

from tandem.api.spec import SloSpec


class SloVerdict(StrEnum):
    """The ``result`` label of ``tandem_router_slo_requests_total``."""

    MET = "met"
    MISSED_TTFT = "missed_ttft"
    MISSED_ITL = "missed_itl"
    MISSED_BOTH = "missed_both"
    FAILED = "failed"  # no answer, an error, or no first token


def slo_verdict(ok: bool, ttft_s: float | None, itl_s: float | None, slo: SloSpec) -> SloVerdict:
    """The verdict on one request: ``ok`` it succeeded; ``ttft_s`` its time to first token (None:
    none came); ``itl_s`` the ITL statistic judged (None: fewer than two tokens)."""
    if not ok or ttft_s is None:
        return SloVerdict.FAILED
    late = ttft_s * 1000 > slo.ttft_ms
    slow = itl_s is not None and itl_s * 1000 > slo.itl_ms
    if late and slow:
        return SloVerdict.MISSED_BOTH
    if late:
        return SloVerdict.MISSED_TTFT
    return SloVerdict.MISSED_ITL if slow else SloVerdict.MET
