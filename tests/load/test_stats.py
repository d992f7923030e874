"""The figures of a run against hand-computed values, and the percentile against numpy's."""

from __future__ import annotations

import random

import numpy as np
import pytest
from load_records import RECORDS, SLO

from tandem.api import SloSpec
from tandem.load.stats import (
    Distribution,
    ItlStatistic,
    meets_slo,
    percentile,
    summarize,
    window_width,
    windows,
)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([5.0], 99, 5.0),
        ([1.0, 2.0], 50, 1.5),
        ([100.0, 200.0, 500.0], 90, 440.0),  # rank 1.8: 200 + 0.8 * 300
        ([3.0, 1.0, 2.0, 4.0], 25, 1.75),
        ([1.0, 2.0, 3.0], 0, 1.0),
        ([1.0, 2.0, 3.0], 100, 3.0),
    ],
)
def test_percentile_interpolates_between_order_statistics(
    values: list[float], p: float, expected: float
) -> None:
    assert percentile(values, p) == pytest.approx(expected)


def test_percentile_is_numpys_default_as_vllm_bench_uses() -> None:
    rng = random.Random(9)
    for size in (1, 2, 7, 100, 1001):
        values = [rng.expovariate(1.0) for _ in range(size)]
        for p in (1, 50, 90, 99, 99.9):
            assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))


def test_distribution_std_is_numpys_population_deviation() -> None:
    values = [1.0, 2.0, 4.0, 8.0]
    d = Distribution.of(values, (90,))
    assert d is not None
    assert (d.count, d.mean, d.median) == (4, 3.75, 3.0)
    assert d.std == pytest.approx(float(np.std(values)))
    assert Distribution.of([], (90,)) is None


@pytest.mark.parametrize(
    ("index", "itl", "slo", "meets"),
    [
        (0, "mean", SLO, True),  # TTFT 100 ms; TPOT (0.15 - 0.1) / 2 = 25 ms
        (0, "mean", SloSpec(ttft_ms=300, itl_ms=24), False),
        (0, "p50", SloSpec(ttft_ms=300, itl_ms=25), True),  # gaps 20, 30: p50 25 ms
        (0, "max", SloSpec(ttft_ms=300, itl_ms=29), False),
        (0, "mean", SloSpec(ttft_ms=99, itl_ms=40), False),
        (1, "mean", SLO, False),  # TTFT 500 ms
        (2, "mean", SLO, False),  # failed
        (3, "max", SloSpec(ttft_ms=300, itl_ms=1), True),  # a single token has no gap to miss
    ],
)
def test_a_request_meets_the_slo_on_ttft_and_its_itl(index: int, itl: str, slo: SloSpec, meets: bool) -> None:
    assert meets_slo(RECORDS[index], slo, ItlStatistic.parse(itl)) is meets


@pytest.mark.parametrize("text", ["p0", "p101", "median", "p", "pninety"])
def test_a_bad_itl_statistic_says_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError, match="mean, max or pNN"):
        ItlStatistic.parse(text)


def test_summary_of_four_requests() -> None:
    s = summarize(RECORDS, SLO, percentiles=(50, 90))
    assert (s.requests, s.sent, s.completed, s.failed, s.held) == (4, 4, 3, 1, 1)
    assert s.errors == {"http 503": 1}
    assert s.duration_s == 3.2
    assert s.total_input_tokens == 10 + 20 + 31  # the server's count where it gave one
    assert s.total_output_tokens == 3 + 2 + 1
    assert s.prompt_mismatches == 1
    assert s.request_throughput == pytest.approx(3 / 3.2)
    assert s.output_throughput == pytest.approx(6 / 3.2)
    assert s.total_token_throughput == pytest.approx(67 / 3.2)
    assert s.ttft_ms is not None and s.itl_ms is not None and s.tpot_ms is not None and s.e2el_ms is not None
    assert s.ttft_ms.mean == pytest.approx(800 / 3)
    assert s.ttft_ms.percentiles == pytest.approx({50: 200.0, 90: 440.0})
    assert s.itl_ms.percentiles == pytest.approx({50: 30.0, 90: 46.0})  # pooled gaps 20, 30, 50
    assert s.tpot_ms.mean == pytest.approx(37.5)  # 25 and 50; the single token has none
    assert s.e2el_ms.median == pytest.approx(200.0)
    assert s.send_lag_ms is not None and s.send_lag_ms.percentiles[90] == pytest.approx(70.0)
    slo = s.slo
    assert (slo.good, slo.judged, slo.attainment, slo.met) == (2, 4, 0.5, True)
    assert slo.goodput == pytest.approx(2 / 3.2)
    assert slo.ttft_at_percentile_ms == pytest.approx(200.0)
    assert slo.itl_at_percentile_ms == pytest.approx(30.0)
    assert not summarize(RECORDS, SloSpec(ttft_ms=300, itl_ms=40, percentile=51)).slo.met


def test_summary_of_nothing_is_zeros_not_a_crash() -> None:
    s = summarize([], SLO)
    assert (s.requests, s.duration_s, s.request_throughput, s.ttft_ms, s.slo.attainment) == (
        0,
        0.0,
        0.0,
        None,
        0.0,
    )
    assert not s.slo.met


def test_windows_split_the_run_by_when_things_happened() -> None:
    series = windows(RECORDS, 1.0, SLO)
    assert [w.start_s for w in series] == [0.0, 1.0, 2.0, 3.0]
    assert [w.arrival_rate for w in series] == [1, 1, 2, 0]  # by when each was due
    assert [w.completion_rate for w in series] == [1, 1, 0, 1]  # by when each ended
    assert [w.error_rate for w in series] == [0, 0, 1, 0]
    assert [w.ttft_ms for w in series] == pytest.approx([100, 500, None, 200])  # by when each was sent
    assert [w.itl_ms for w in series] == pytest.approx([25, 50, None, None])  # by when each gap ended
    assert [w.attainment for w in series] == [1.0, 0.0, 0.5, None]


@pytest.mark.parametrize(("span", "width"), [(0.5, 1.0), (10, 1.0), (60, 2.0), (400, 10.0), (1000, 50.0)])
def test_window_width_is_round_and_gives_about_forty(span: float, width: float) -> None:
    assert window_width(span) == width
