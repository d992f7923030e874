"""The figures of a run, from its records: throughput, latency distributions, SLO attainment, windows.

Definitions match ``vllm bench serve`` (vllm/benchmarks/serve.py, ``calculate_metrics``), so the
numbers compare: percentiles interpolate linearly (``np.percentile``'s default), ``std`` is the
population deviation (``np.std``); TTFT, TPOT and E2E latency are per successful request, ITL pools
the chunk gaps of every successful request; the duration runs from the start to the last request's
end, and throughputs divide by it. Latencies are in milliseconds.

SLO attainment is the share of requests that meet both targets of the pool's ``SloSpec``: a request
meets them when it succeeded, its TTFT is at most ``ttft_ms`` and its ITL — by default its mean per
token (TPOT, which a chunk of several tokens does not distort; ``vllm bench serve --goodput
tpot:…`` judges the same), or a percentile of its own gaps — is at most ``itl_ms``. A failed request
misses. The pool meets its SLO when the attainment reaches the SLO's percentile (90 %: nine requests
in ten meet both targets): the count an autoscaler watches. Goodput is the meeting requests per
second, vLLM's ``request_goodput``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tandem.api import SloSpec, SloVerdict, slo_verdict
from tandem.load.records import RequestRecord

DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between order statistics."""
    if not values:
        raise ValueError("no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Distribution:
    count: int
    mean: float
    median: float
    std: float
    percentiles: dict[float, float]

    @classmethod
    def of(cls, values: Sequence[float], percentiles: Sequence[float]) -> Distribution | None:
        if not values:
            return None
        return cls(
            count=len(values),
            mean=statistics.fmean(values),
            median=percentile(values, 50),
            std=statistics.pstdev(values),
            percentiles={p: percentile(values, p) for p in percentiles},
        )


@dataclass(frozen=True)
class ItlStatistic:
    """The ITL of one request that the SLO judges: its mean per token (TPOT), or a percentile of its gaps."""

    percentile: float | None = None  # None: the mean per token

    @classmethod
    def parse(cls, text: str) -> ItlStatistic:
        """``mean``, ``max`` or ``pNN`` (e.g. ``p90``)."""
        if text == "mean":
            return cls()
        if text == "max":
            return cls(100.0)
        try:
            value = float(text.removeprefix("p")) if text.startswith("p") else math.nan
        except ValueError:
            value = math.nan
        if not 0 < value <= 100:
            raise ValueError(f"{text!r}: the ITL statistic is mean, max or pNN with 0 < NN <= 100")
        return cls(value)

    def describe(self) -> str:
        if self.percentile is None:
            return "mean"
        return "max" if self.percentile == 100 else f"p{self.percentile:g}"

    def of(self, record: RequestRecord) -> float | None:
        """Seconds; None when the request has no gap (a single token), which no ITL target can miss."""
        if self.percentile is None:
            return record.tpot_s
        return percentile(record.itl_s, self.percentile) if record.itl_s else None


MEAN_ITL = ItlStatistic()


def meets_slo(record: RequestRecord, slo: SloSpec, itl: ItlStatistic) -> bool:
    ttft_s = record.ttft_s if record.ok else None  # itl.of() asks for a successful request's gaps
    return slo_verdict(record.ok, ttft_s, None if ttft_s is None else itl.of(record), slo) is SloVerdict.MET


@dataclass(frozen=True)
class SloResult:
    slo: SloSpec
    itl_statistic: str
    good: int  # requests that met both targets
    judged: int  # every request of the run; a failure misses
    goodput: float  # good requests per second
    ttft_at_percentile_ms: float | None  # over successful requests
    itl_at_percentile_ms: float | None  # over every chunk gap

    @property
    def attainment(self) -> float:
        return self.good / self.judged if self.judged else 0.0

    @property
    def met(self) -> bool:
        return self.judged > 0 and self.attainment * 100 >= self.slo.percentile


@dataclass(frozen=True)
class Summary:
    duration_s: float
    requests: int  # every arrival: completed + failed
    sent: int
    completed: int
    errors: dict[str, int]  # by kind: "http 503", "timeout", …
    held: int  # arrivals that found every in-flight slot taken and waited
    send_lag_ms: Distribution | None  # sent - due, over sent requests
    prompt_mismatches: int  # successes whose prompt the server counted otherwise than asked
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    ttft_ms: Distribution | None
    tpot_ms: Distribution | None
    itl_ms: Distribution | None
    e2el_ms: Distribution | None
    slo: SloResult

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def _ms(values: Iterable[float]) -> list[float]:
    return [v * 1000 for v in values]


def summarize(
    records: Sequence[RequestRecord],
    slo: SloSpec,
    itl: ItlStatistic = MEAN_ITL,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> Summary:
    done = [r for r in records if r.ok]
    ends = [r.ended_s for r in records if r.ended_s is not None]
    duration = max(ends, default=0.0)

    def rate(count: int) -> float:
        return count / duration if duration > 0 else 0.0

    sent = [r for r in records if r.sent_s is not None]
    inputs = sum(r.counted_prompt_tokens for r in done)
    outputs = sum(r.generated_tokens for r in done)
    ttfts = [r.ttft_s for r in done if r.ttft_s is not None]
    tpots = [t for t in (r.tpot_s for r in done) if t is not None]
    gaps = [gap for r in done for gap in r.itl_s]
    latencies = [r.latency_s for r in done if r.latency_s is not None]
    good = sum(meets_slo(r, slo, itl) for r in records)
    errors = Counter(r.error_label for r in records if r.error_label is not None)
    return Summary(
        duration_s=duration,
        requests=len(records),
        sent=len(sent),
        completed=len(done),
        errors=dict(sorted(errors.items())),
        held=sum(r.held for r in records),
        send_lag_ms=Distribution.of(
            _ms(r.sent_s - r.scheduled_s for r in sent if r.sent_s is not None), percentiles
        ),
        prompt_mismatches=sum(
            r.server_prompt_tokens is not None and r.server_prompt_tokens != r.prompt_tokens for r in done
        ),
        total_input_tokens=inputs,
        total_output_tokens=outputs,
        request_throughput=rate(len(done)),
        output_throughput=rate(outputs),
        total_token_throughput=rate(inputs + outputs),
        ttft_ms=Distribution.of(_ms(ttfts), percentiles),
        tpot_ms=Distribution.of(_ms(tpots), percentiles),
        itl_ms=Distribution.of(_ms(gaps), percentiles),
        e2el_ms=Distribution.of(_ms(latencies), percentiles),
        slo=SloResult(
            slo=slo,
            itl_statistic=itl.describe(),
            good=good,
            judged=len(records),
            goodput=rate(good),
            ttft_at_percentile_ms=percentile(_ms(ttfts), slo.percentile) if ttfts else None,
            itl_at_percentile_ms=percentile(_ms(gaps), slo.percentile) if gaps else None,
        ),
    )


@dataclass(frozen=True)
class Window:
    """One time window of a run: rates per second, and latency percentiles of what happened in it."""

    start_s: float
    width_s: float
    arrival_rate: float  # requests due in the window, per second
    completion_rate: float  # requests that completed in it
    error_rate: float  # requests that failed in it
    ttft_ms: float | None  # at the percentile, of successful requests sent in the window
    itl_ms: float | None  # at the percentile, of the chunk gaps that ended in the window
    attainment: float | None  # share of the requests due in the window that met the SLO


def window_width(span_s: float, target_windows: int = 40) -> float:
    """A round window width (1, 2 or 5 times a power of ten, at least 1 s) giving about ``target_windows``."""
    raw = max(span_s / target_windows, 1.0)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(step * magnitude for step in (1, 2, 5, 10) if step * magnitude >= raw)


def _gap_ends(record: RequestRecord) -> Iterable[tuple[float, float]]:
    """(time the gap ended, gap) for each chunk gap of a successful request."""
    if record.sent_s is None or record.ttft_s is None:
        return
    at = record.sent_s + record.ttft_s
    for gap in record.itl_s:
        at += gap
        yield at, gap


def windows(
    records: Sequence[RequestRecord],
    width_s: float,
    slo: SloSpec,
    itl: ItlStatistic = MEAN_ITL,
) -> list[Window]:
    """Consecutive windows of ``width_s`` from 0 to the end of the last request."""
    end = max((r.ended_s for r in records if r.ended_s is not None), default=0.0)
    count = max(1, math.ceil(end / width_s))

    def slot(t: float) -> int:
        return min(count - 1, max(0, int(t // width_s)))

    due: list[list[RequestRecord]] = [[] for _ in range(count)]
    ttfts: list[list[float]] = [[] for _ in range(count)]
    gaps: list[list[float]] = [[] for _ in range(count)]
    completed, failed = [0] * count, [0] * count
    for record in records:
        due[slot(record.scheduled_s)].append(record)
        if record.ended_s is not None:
            (completed if record.ok else failed)[slot(record.ended_s)] += 1
        if record.ok and record.sent_s is not None and record.ttft_s is not None:
            ttfts[slot(record.sent_s)].append(record.ttft_s * 1000)
            for at, gap in _gap_ends(record):
                gaps[slot(at)].append(gap * 1000)
    p = slo.percentile
    return [
        Window(
            start_s=i * width_s,
            width_s=width_s,
            arrival_rate=len(due[i]) / width_s,
            completion_rate=completed[i] / width_s,
            error_rate=failed[i] / width_s,
            ttft_ms=percentile(ttfts[i], p) if ttfts[i] else None,
            itl_ms=percentile(gaps[i], p) if gaps[i] else None,
            attainment=sum(meets_slo(r, slo, itl) for r in due[i]) / len(due[i]) if due[i] else None,
        )
        for i in range(count)
    ]
