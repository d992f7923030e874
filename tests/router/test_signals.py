"""The router's workload signals (router/signals.py, router/meter.py): what one request's answer
records, read back through the autoscaler's own parser (operator/autoscale/router_metrics.py), so
the two sides of the contract cannot drift apart. Times are given, never read from a clock."""

from __future__ import annotations

import json

import pytest
from prometheus_text import metric_sum

from tandem.api import SloSpec
from tandem.operator.autoscale.router_metrics import (
    ITL_SECONDS,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    TTFT_SECONDS,
    parse_router_metrics,
)
from tandem.router.meter import RequestMeter, failed, text_events, usage_of
from tandem.router.metrics import RouterMetrics

POOL, MODEL = "chat", "meta-llama/Llama-3.1-8B-Instruct"
SLO = SloSpec(ttft_ms=500, itl_ms=50)


def chat_event(delta: dict[str, object], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": MODEL, "choices": [choice]}
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


ROLE = chat_event({"role": "assistant", "content": ""})
USAGE = b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":812,"completion_tokens":4}}\n\n'
DONE = b"data: [DONE]\n\n"


def text(word: str) -> bytes:
    return chat_event({"content": word})


def scrape(metrics: RouterMetrics) -> str:
    return metrics.exposition().decode()


def stream(
    metrics: RouterMetrics, chunks: list[tuple[float, bytes]], outcome: str = "ok", *, end: float = 2.0
) -> None:
    meter = RequestMeter(metrics.workload.route(POOL, MODEL, "pd"), SLO, 0.0, prompt_tokens=800)
    for at, chunk in chunks:
        meter.chunk(chunk, at)
    meter.streamed(outcome, b"".join(c for _, c in chunks[-2:]), end)


def test_text_events_skip_the_role_usage_and_done_events() -> None:
    assert text_events(ROLE) == 0
    assert text_events(USAGE) == 0
    assert text_events(DONE) == 0
    assert text_events(text("Hi") + text(" there") + DONE) == 2  # a chunk that carries two events
    assert text_events(b'data: {"choices":[{"index":0,"text":" a","finish_reason":null}]}\n\n') == 1


def test_usage_is_the_last_event_that_reports_one() -> None:
    usage = usage_of(text("x") + USAGE + DONE)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (812, 4)
    assert usage_of(text("x") + DONE) is None
    assert usage_of(b'data: {"usage":{"prompt_tokens": "many"}}\n\n') is None  # not vLLM's: ignored


def test_a_stream_records_ttft_at_its_first_text_and_itl_between_text_chunks() -> None:
    metrics = RouterMetrics()
    stream(metrics, [(0.1, ROLE), (0.3, text("a")), (0.32, text("b")), (0.35, text("c") + DONE)])
    sample = parse_router_metrics(scrape(metrics), POOL)
    ttft, itl = sample.histogram(TTFT_SECONDS), sample.histogram(ITL_SECONDS)
    assert (ttft.count, ttft.sum) == (1, pytest.approx(0.3))  # the role chunk is no token
    assert (itl.count, itl.sum) == (2, pytest.approx(0.05))
    assert sample.histogram(OUTPUT_TOKENS).sum == 3
    assert sample.histogram(PROMPT_TOKENS).sum == 800  # the router's count: the stream had no usage
    assert sample.slo == {"met": 1, "missed_ttft": 0, "missed_itl": 0, "missed_both": 0, "failed": 0}


def test_a_lone_done_chunk_is_no_token_and_no_gap() -> None:
    metrics = RouterMetrics()
    stream(metrics, [(0.1, text("a")), (0.12, text("b")), (0.5, DONE)])
    sample = parse_router_metrics(scrape(metrics), POOL)
    itl = sample.histogram(ITL_SECONDS)
    assert (itl.count, itl.sum) == (1, pytest.approx(0.02))
    assert sample.histogram(OUTPUT_TOKENS).sum == 2


def test_the_engines_usage_wins_over_counted_events() -> None:
    metrics = RouterMetrics()
    stream(metrics, [(0.1, text("ab")), (0.2, text("cd")), (0.3, USAGE + DONE)])
    sample = parse_router_metrics(scrape(metrics), POOL)
    assert (sample.histogram(PROMPT_TOKENS).sum, sample.histogram(OUTPUT_TOKENS).sum) == (812, 4)
    exposition = scrape(metrics)
    assert metric_sum(exposition, "tandem_router_tokens_total", pool=POOL, direction="in") == 812
    assert metric_sum(exposition, "tandem_router_tokens_total", pool=POOL, direction="out") == 4


@pytest.mark.parametrize(
    ("chunks", "outcome", "end", "verdict"),
    [
        ([(0.6, text("a")), (0.62, text("b"))], "ok", 1.0, "missed_ttft"),
        ([(0.1, text("a")), (0.3, text("b")), (0.5, text("c"))], "ok", 1.0, "missed_itl"),  # TPOT 200 ms
        ([(0.9, text("a")), (1.5, text("b"))], "ok", 2.0, "missed_both"),
        ([(0.1, text("a")), (0.12, b'data: {"error":{"message":"boom"}}\n\n')], "error", 1.0, "failed"),
        ([(0.1, text("a")), (0.12, text("b"))], "cancelled", 1.0, "met"),  # judged on what it got
        ([], "cancelled", 1.0, "failed"),  # left after the target passed with nothing
        ([(0.1, text("a"))], "ok", 0.2, "met"),  # one token: no gap to miss
    ],
)
def test_a_stream_is_judged_once_by_the_shared_verdict(
    chunks: list[tuple[float, bytes]], outcome: str, end: float, verdict: str
) -> None:
    metrics = RouterMetrics()
    stream(metrics, chunks, outcome, end=end)
    slo = parse_router_metrics(scrape(metrics), POOL).slo
    assert slo[verdict] == 1 and sum(slo.values()) == 1


def test_a_client_that_left_early_with_nothing_is_not_judged() -> None:
    metrics = RouterMetrics()
    stream(metrics, [], "cancelled", end=0.2)  # before the 500 ms target
    assert sum(parse_router_metrics(scrape(metrics), POOL).slo.values()) == 0


def test_a_whole_answer_counts_its_usage_and_is_not_judged() -> None:
    metrics = RouterMetrics()
    meter = RequestMeter(metrics.workload.route(POOL, MODEL, "direct"), SLO, 0.0, prompt_tokens=10)
    meter.answered(True, b'{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7}}')
    sample = parse_router_metrics(scrape(metrics), POOL)
    assert (sample.histogram(PROMPT_TOKENS).sum, sample.histogram(OUTPUT_TOKENS).sum) == (12, 7)
    assert sample.histogram(TTFT_SECONDS).count == 0 and sum(sample.slo.values()) == 0


def test_refused_streams_fail_and_refused_whole_requests_are_not_judged() -> None:
    metrics = RouterMetrics()
    failed(metrics.workload.route(POOL, MODEL, "none"), streamed=True)
    failed(metrics.workload.route(POOL, MODEL, "none"), streamed=False)
    assert parse_router_metrics(scrape(metrics), POOL).slo["failed"] == 1


def test_a_declared_pool_exports_every_family_at_zero() -> None:
    metrics = RouterMetrics()
    pool = metrics.workload.declare(POOL, MODEL)
    text_ = scrape(metrics)
    for family in ("arrivals_total", "slo_requests_total", "tokens_total", "ttft_seconds_count"):
        assert f"tandem_router_{family}{{" in text_, family
    assert parse_router_metrics(text_, POOL).arrivals == 0
    pool.arrived()
    pool.arrived()
    assert parse_router_metrics(scrape(metrics), POOL).arrivals == 2


def test_buckets_are_fine_enough_for_a_p90_within_a_fifth() -> None:
    """The autoscaler estimates p90 from the buckets: for ITLs and prompt lengths spread evenly
    over a range, its estimate lands within 20 % of the true p90."""
    metrics = RouterMetrics()
    route = metrics.workload.route(POOL, MODEL, "pd")
    gaps = [0.01 + 0.04 * i / 999 for i in range(1000)]  # 10-50 ms
    prompts = [1000 + 7000 * i / 999 for i in range(1000)]  # 1k-8k tokens
    for gap, prompt in zip(gaps, prompts, strict=True):
        route.itl.observe(gap)
        route.prompt.observe(prompt)
    sample = parse_router_metrics(scrape(metrics), POOL)
    assert sample.histogram(ITL_SECONDS).quantile(0.9) == pytest.approx(sorted(gaps)[899], rel=0.2)
    assert sample.histogram(PROMPT_TOKENS).quantile(0.9) == pytest.approx(sorted(prompts)[899], rel=0.2)


def test_usage_with_nested_details_is_read_from_its_whole_answer() -> None:
    body = (
        b'{"id":"x","choices":[],"usage":{"prompt_tokens":9,"total_tokens":12,"completion_tokens":3,'
        b'"prompt_tokens_details":{"cached_tokens":8}}}'
    )
    usage = usage_of(body)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (9, 3)
    streamed = text("x") + b"data: " + body + b"\n\n" + DONE
    usage = usage_of(streamed)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (9, 3)
