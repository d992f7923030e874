"""The observation from router scrapes: histogram quantiles as PromQL computes them, the contract's
families read from real prometheus_client text, rates over a window across router restarts."""

from __future__ import annotations

import math

import pytest
from router_signals import ContractRouter

from tandem.operator.autoscale.histogram import Histogram
from tandem.operator.autoscale.router_metrics import MetricsTextError, RouterSample, parse_router_metrics
from tandem.operator.autoscale.window import Scrape, in_window, window_observation

INF = math.inf


def histogram(buckets: dict[float, float]) -> Histogram:
    return Histogram(buckets, count=buckets[INF])


# Prometheus' own cases, promql/promqltest/testdata/histograms.test (prometheus/prometheus): the
# "testhistogram" series at 50m (ten loads of 0+5x10 etc.: counts 50, 70, 110, 120 and 10, 20, 20,
# 30), "testhistogram2" (1 observation each in (0,2], (2,4], (4,6]) and the four
# "request_duration_seconds" series summed by le (per step: 10, 19, 25).
POSITIVE = histogram({0.1: 50, 0.2: 70, 1.0: 110, INF: 120})
NEGATIVE = histogram({-0.2: 10, -0.1: 20, 0.3: 20, INF: 30})
MIDDLES = histogram({0.0: 0, 2.0: 1, 4.0: 2, 6.0: 3, INF: 3})
SUMMED = (
    histogram({0.1: 1, 0.2: 3, INF: 4})
    + histogram({0.1: 2, 0.2: 5, INF: 6})
    + histogram({0.1: 3, 0.2: 4, INF: 6})
    + histogram({0.1: 4, 0.2: 7, INF: 9})
)


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        (POSITIVE, 0.0, 0.0),
        (POSITIVE, 0.2, 0.048),
        (POSITIVE, 0.5, 0.15),
        (POSITIVE, 0.8, 0.72),
        (POSITIVE, 1.0, 1.0),  # in the +Inf bucket: the highest finite bound
        (NEGATIVE, 0.0, -0.2),  # in a lowest bucket bounded at or below 0: its bound
        (NEGATIVE, 0.2, -0.2),
        (NEGATIVE, 0.5, -0.15),
        (NEGATIVE, 0.8, 0.3),
        (MIDDLES, 1 / 6, 1.0),
        (MIDDLES, 0.5, 3.0),
        (MIDDLES, 5 / 6, 5.0),
        (SUMMED, 0.3, 0.075),
        (SUMMED, 0.5, 0.1277777777777778),
    ],
)
def test_quantiles_are_promqls(buckets: Histogram, q: float, expected: float) -> None:
    assert buckets.quantile(q) == pytest.approx(expected)


@pytest.mark.parametrize(
    "buckets",
    [
        Histogram(),
        histogram({0.1: 0, INF: 0}),  # no observations
        Histogram({0.1: 3, 0.2: 5}, count=5),  # no +Inf bucket
        histogram({INF: 4}),  # one bucket
    ],
)
def test_quantiles_promql_answers_nan_for_are_none(buckets: Histogram) -> None:
    assert buckets.quantile(0.9) is None


def test_a_histogram_that_went_down_restarted_and_counts_from_zero() -> None:
    before, after = histogram({1.0: 8, INF: 10}), histogram({1.0: 2, INF: 3})
    assert after.increase_since(before) == after
    assert histogram({1.0: 9, INF: 12}).increase_since(before) == Histogram({1.0: 1, INF: 2}, count=2)


def test_the_contract_families_are_read_for_the_pool_summed_over_routes_and_models() -> None:
    router = ContractRouter()
    router.serve(3, prompt=1000, output=100, route="pd")
    router.serve(2, prompt=100, output=50, route="local", result="missed_ttft")
    router.serve(7, pool="another-pool")
    sample = parse_router_metrics(router.text(), "sim-llama")
    assert sample.arrivals == 5
    assert sample.slo == {"met": 3, "missed_ttft": 2}
    prompt = sample.histogram("tandem_router_prompt_tokens")
    assert prompt.count == 5 and prompt.sum == 3 * 1000 + 2 * 100
    itl = sample.histogram("tandem_router_itl_seconds")
    assert itl.count == 3 * 99 + 2 * 49


def test_a_router_with_no_traffic_yet_reads_as_zero() -> None:
    assert parse_router_metrics(ContractRouter().text(), "sim-llama") == RouterSample()


@pytest.mark.parametrize("text", ["<html>502 Bad Gateway</html>", 'tandem_router_arrivals_total{pool="x" 1'])
def test_text_that_is_not_the_exposition_format_is_refused(text: str) -> None:
    with pytest.raises(MetricsTextError):
        parse_router_metrics(text, "sim-llama")


class Routers:
    """Router replicas scraped on a test clock."""

    def __init__(self, *names: str) -> None:
        self.routers = {name: ContractRouter() for name in names}
        self.scrapes: list[Scrape] = []

    def scrape(self, at: float, *, missing: tuple[str, ...] = ()) -> None:
        routers = {
            name: parse_router_metrics(router.text(), "sim-llama")
            for name, router in self.routers.items()
            if name not in missing
        }
        self.scrapes.append(Scrape(at, routers, {name: "timed out" for name in missing}))


def test_the_rate_sums_every_router_over_the_window() -> None:
    routers = Routers("a", "b")
    routers.scrape(0)
    for t in (15, 30, 45, 60):
        routers.routers["a"].serve(30)
        routers.routers["b"].serve(15, ttft_s=2.0)
        routers.scrape(t)
    observed = window_observation(routers.scrapes, 60, percentile=90)
    assert observed is not None
    assert observed.requests_per_second == pytest.approx(180 / 60)
    assert observed.prompt_tokens is not None and observed.prompt_tokens.mean == pytest.approx(1000)
    assert observed.slo_attainment == 1.0 and observed.judged == 180
    # A third of the requests took 2 s: the p90 lies in (1, 2.5], interpolated by PromQL's rule.
    assert observed.ttft_p90_ms == pytest.approx(1000 * (1 + 1.5 * (0.9 * 180 - 120) / 60))
    assert observed.complete


def test_a_restarted_router_counts_as_prometheus_rate_counts_it() -> None:
    """30 requests, a restart (counters from 0), 10 more: 40 in the window, not 10 - 30."""
    routers = Routers("a")
    routers.scrape(0)
    routers.routers["a"].serve(30)
    routers.scrape(15)
    routers.routers["a"].restart()
    routers.routers["a"].serve(10)
    routers.scrape(30)
    observed = window_observation(routers.scrapes, 30, percentile=90)
    assert observed is not None and observed.requests_per_second == pytest.approx(40 / 30)
    assert observed.judged == 40


def test_a_router_first_seen_inside_the_window_counts_from_its_first_scrape() -> None:
    routers = Routers("a")
    routers.scrape(0)
    routers.routers["a"].serve(20)
    routers.routers["new"] = ContractRouter()
    routers.routers["new"].serve(100)  # before its first scrape: outside what the window can see
    routers.scrape(10)
    routers.routers["new"].serve(10)
    routers.scrape(20)
    observed = window_observation(routers.scrapes, 20, percentile=90)
    assert observed is not None and observed.requests_per_second == pytest.approx(30 / 20)


def test_a_router_that_did_not_answer_is_bridged_between_and_reported_at_the_ends() -> None:
    routers = Routers("a", "b")
    routers.scrape(0)
    routers.routers["b"].serve(10)
    routers.scrape(15, missing=("b",))
    routers.routers["b"].serve(10)
    routers.scrape(30)
    observed = window_observation(routers.scrapes, 30, percentile=90)
    assert observed is not None and observed.requests_per_second == pytest.approx(20 / 30)
    assert observed.complete
    routers.scrape(45, missing=("b",))
    observed = window_observation(routers.scrapes, 30, percentile=90)
    assert observed is not None and observed.missing == ("b: timed out",)


def test_the_window_starts_at_the_last_scrape_at_or_before_its_start() -> None:
    scrapes = [Scrape(float(t)) for t in range(0, 100, 15)]  # 0, 15, ..., 90
    assert [s.at for s in in_window(scrapes, 60)] == [30, 45, 60, 75, 90]
    assert [s.at for s in in_window(scrapes, 1000)] == [s.at for s in scrapes]


def test_latencies_are_read_at_the_slo_percentile_too() -> None:
    routers = Routers("a")
    routers.scrape(0)
    routers.routers["a"].serve(90, ttft_s=0.2)
    routers.routers["a"].serve(10, ttft_s=4.0)
    routers.scrape(15)
    observed = window_observation(routers.scrapes, 15, percentile=99)
    assert observed is not None
    assert observed.ttft_p90_ms == pytest.approx(250)  # rank 90 closes the (0.1, 0.25] bucket
    assert observed.ttft_ms == pytest.approx(1000 * (2.5 + 2.5 * 9 / 10))  # rank 99 in (2.5, 5]


def test_one_scrape_is_no_window() -> None:
    routers = Routers("a")
    routers.scrape(0)
    assert window_observation(routers.scrapes, 60, percentile=90) is None
