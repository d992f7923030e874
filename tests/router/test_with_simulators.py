"""The router in front of simulator processes (static discovery), driven with the openai SDK.

One LMCache pool (two decoders sharing the pool's receiver ports on their own addresses, prefillers
notifying router replica A or B) and one NIXL pool, plus an aggregated simulator whose answers are
the reference: a handoff must answer exactly what one engine would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import openai
import pytest
from prometheus_text import metric_sum
from router_support import (
    LONG_PROMPT,
    MODEL,
    Addresses,
    Engine,
    LmcachePorts,
    direct_router_settings,
    engines_running,
    eventually,
    free_port,
    lmcache_decoder,
    lmcache_prefiller,
    lmcache_router_settings,
    nixl_engine,
    nixl_router_settings,
    router_client,
    router_running,
)

from tandem.api.spec import DisaggregationMode
from tandem.operator.autoscale.router_metrics import (
    ITL_SECONDS,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    TTFT_SECONDS,
    parse_router_metrics,
)
from tandem.router.settings import RouterSettings

pytestmark = pytest.mark.slow

SHORT_PROMPT = "Say hello."


@dataclass
class LmcachePool:
    decoders: list[Engine]
    to_a: Engine  # prefiller notifying replica A
    to_b: Engine  # prefiller notifying replica B
    spares: list[Engine]  # prefillers notifying A, each for one test that kills it
    reference: Engine  # aggregated
    ports_a: LmcachePorts  # the pool's, with router replica A's notification port
    ports_b: LmcachePorts  # the pool's, with router replica B's


@pytest.fixture(scope="module")
def lmcache_pool() -> Iterator[LmcachePool]:
    hosts = Addresses()
    ports_a = LmcachePorts.free()
    ports_b = replace(ports_a, notify=free_port())
    specs = [
        (host := hosts.take(), lmcache_decoder(host, ports_a)),
        (host := hosts.take(), lmcache_decoder(host, ports_a)),
        (hosts.take(), lmcache_prefiller(ports_a)),
        (hosts.take(), lmcache_prefiller(ports_b)),
        (hosts.take(), lmcache_prefiller(ports_a)),
        (hosts.take(), lmcache_prefiller(ports_a)),
        (hosts.take(), ([], {})),
    ]
    with engines_running(specs) as engines:
        d1, d2, to_a, to_b, spare1, spare2, reference = engines
        yield LmcachePool([d1, d2], to_a, to_b, [spare1, spare2], reference, ports_a, ports_b)


def lmcache_settings(
    pool: LmcachePool, *, prefill: list[Engine], ports: LmcachePorts, **overrides: Any
) -> RouterSettings:
    static = overrides.pop("static", None)
    tuning = {"scrape_interval_s": 0.5, "handoff_timeout_s": 5, **overrides}
    return lmcache_router_settings(ports, pool.decoders, prefill, static, **tuning)


@pytest.fixture
async def router_a(lmcache_pool: LmcachePool) -> AsyncIterator[str]:
    settings = lmcache_settings(lmcache_pool, prefill=[lmcache_pool.to_a], ports=lmcache_pool.ports_a)
    async with router_running(settings) as url:
        yield url


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


async def ask(
    url: str, kind: str, prompt: str, *, stream: bool, max_tokens: int = 12
) -> tuple[str, str | None, Any]:
    """(text, x-tandem-route, usage) of one request through the SDK."""
    async with client(url) as sdk:
        if kind == "chat":
            raw = await sdk.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                stream=stream,
                stream_options={"include_usage": True} if stream else openai.NOT_GIVEN,
            )
        else:
            raw = await sdk.completions.with_raw_response.create(
                model=MODEL,
                prompt=prompt,
                max_tokens=max_tokens,
                stream=stream,
                stream_options={"include_usage": True} if stream else openai.NOT_GIVEN,
            )
        route = raw.headers.get("x-tandem-route")
        answer = raw.parse()
        if not stream:
            choice = answer.choices[0]
            return (choice.message.content if kind == "chat" else choice.text) or "", route, answer.usage
        text, usage = "", None
        async for chunk in answer:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text += (choice.delta.content if kind == "chat" else choice.text) or ""
        return text, route, usage


def kv_counts(decoders: list[Engine], connector: str) -> tuple[float, float, float]:
    return tuple(  # type: ignore[return-value]
        sum(d.metric(f"tandem_sim_kv_{what}_total", connector=connector) for d in decoders)
        for what in ("hits", "misses", "early_reads")
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", ["completion", "chat"])
async def test_lmcache_routes_by_length_and_answers_like_one_engine(
    lmcache_pool: LmcachePool, router_a: str, kind: str, stream: bool
) -> None:
    hits, misses, early = kv_counts(lmcache_pool.decoders, "lmcache")
    for prompt, expected_route in ((SHORT_PROMPT, "direct"), (LONG_PROMPT, "pd")):
        text, route, usage = await ask(router_a, kind, prompt, stream=stream)
        reference, _, reference_usage = await ask(lmcache_pool.reference.url, kind, prompt, stream=stream)
        assert route == expected_route
        assert text == reference and text
        assert (usage.prompt_tokens, usage.completion_tokens) == (
            reference_usage.prompt_tokens,
            reference_usage.completion_tokens,
        )
    assert kv_counts(lmcache_pool.decoders, "lmcache") == (hits + 1, misses, early)


async def test_notification_landing_on_the_other_replica_still_completes(lmcache_pool: LmcachePool) -> None:
    pool = lmcache_pool
    a_settings = lmcache_settings(
        pool, prefill=[pool.to_b], ports=pool.ports_a, notify_peers=(f"127.0.0.1:{pool.ports_b.notify}",)
    )
    b_settings = lmcache_settings(
        pool, prefill=[pool.to_b], ports=pool.ports_b, notify_peers=(f"127.0.0.1:{pool.ports_a.notify}",)
    )
    async with router_running(a_settings) as url_a, router_running(b_settings) as url_b:
        hits = kv_counts(pool.decoders, "lmcache")[0]
        results = await asyncio.gather(
            *(ask(url_a, "completion", f"{i} {LONG_PROMPT}", stream=False) for i in range(3))
        )
        assert [route for _, route, _ in results] == ["pd"] * 3
        async with httpx.AsyncClient() as http:
            metrics_b = (await http.get(f"{url_b}/metrics")).text
            metrics_a = (await http.get(f"{url_a}/metrics")).text
    assert metric_sum(metrics_b, "tandem_router_kv_notifications_total", disposition="forwarded") == 3
    assert metric_sum(metrics_a, "tandem_router_kv_notifications_total", disposition="own") == 3
    assert kv_counts(pool.decoders, "lmcache")[0] == hits + 3


@pytest.mark.parametrize("mode", [DisaggregationMode.AUTO, DisaggregationMode.ALWAYS])
async def test_prefiller_killed_mid_handoff(lmcache_pool: LmcachePool, mode: DisaggregationMode) -> None:
    victim = lmcache_pool.spares.pop()
    settings = lmcache_settings(
        lmcache_pool, prefill=[victim], ports=lmcache_pool.ports_a, static={"mode": mode}
    )
    victim.set_faults(hang=True)  # the prefill leg is in the engine when the engine dies
    async with router_running(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 8}
        pending = asyncio.create_task(http.post("/v1/completions", json=body))

        async def held() -> bool:  # the prefill leg is in the engine: the hang counted it
            return victim.metric("tandem_sim_faults_injected_total", fault="hang") >= 1

        await eventually(held, "the prefill leg held in the prefiller", within_s=30)
        victim.kill()
        answer = await pending
        metrics = (await http.get("/metrics")).text
    if mode == DisaggregationMode.AUTO:
        async with httpx.AsyncClient(base_url=lmcache_pool.reference.url, timeout=30) as http:
            reference = (await http.post("/v1/completions", json=body)).json()
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-tandem-route"] == "direct"
        assert answer.json()["choices"][0]["text"] == reference["choices"][0]["text"]
        assert metric_sum(metrics, "tandem_router_fallbacks_total", reason="prefill_failed") == 1
    else:
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "no_prefill_endpoint"


async def test_queue_overflow_answers_429(lmcache_pool: LmcachePool) -> None:
    decoder = lmcache_pool.decoders[0]
    settings = direct_router_settings(
        decoder.url, {"max_queue": 1}, max_inflight_per_decode=1, retry_after_s=2
    )
    decoder.set_faults(hang=True)  # the first request stays in flight until the hang is cleared
    try:
        async with router_running(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:

            def router_shows(name: str, value: float, **labels: str) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return metric_sum((await http.get("/metrics")).text, name, **labels) == value

                return check

            body = {"model": MODEL, "prompt": SHORT_PROMPT, "max_tokens": 2}
            running = asyncio.create_task(http.post("/v1/completions", json=body))
            in_flight = router_shows("tandem_router_endpoint_in_flight", 1, role="decode")
            await eventually(in_flight, "the first request in flight", within_s=30)
            queued = asyncio.create_task(http.post("/v1/completions", json=body))
            await eventually(router_shows("tandem_router_queue_depth", 1), "the second queued", within_s=30)
            refused = await http.post("/v1/completions", json=body)
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "2"
            assert refused.json()["error"]["type"] == "rate_limit_error"
            decoder.set_faults()
            assert [(await t).status_code for t in (running, queued)] == [200, 200]
    finally:
        decoder.set_faults()


async def test_decoder_dying_mid_stream_ends_only_that_stream_with_an_error(
    lmcache_pool: LmcachePool,
) -> None:
    decoder = lmcache_pool.decoders[1]
    settings = direct_router_settings(decoder.url)
    decoder.set_faults(close_after_chunks=2)
    try:
        async with router_running(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            body = {"model": MODEL, "prompt": SHORT_PROMPT, "max_tokens": 20, "stream": True}
            async with http.stream("POST", "/v1/completions", json=body) as response:
                events = [line async for line in response.aiter_lines() if line.startswith("data:")]
            metrics = (await http.get("/metrics")).text
    finally:
        decoder.set_faults()
    assert '"error"' in events[-1] and "[DONE]" not in "".join(events)
    assert len(events) >= 2
    assert metric_sum(metrics, "tandem_router_requests_total", route="direct", outcome="error") == 1


@dataclass
class NixlPool:
    decoder: Engine
    prefiller: Engine
    reference: Engine


@pytest.fixture(scope="module")
def nixl_pool() -> Iterator[NixlPool]:
    hosts = Addresses()
    specs = [(host := hosts.take(), nixl_engine(host)) for _ in range(2)] + [(hosts.take(), ([], {}))]
    with engines_running(specs) as (decoder, prefiller, reference):
        yield NixlPool(decoder, prefiller, reference)


@pytest.fixture
async def nixl_router(nixl_pool: NixlPool) -> AsyncIterator[str]:
    settings = nixl_router_settings([nixl_pool.decoder], [nixl_pool.prefiller], scrape_interval_s=0.5)
    async with router_running(settings) as url:
        yield url


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", ["completion", "chat"])
async def test_nixl_routes_by_length_and_answers_like_one_engine(
    nixl_pool: NixlPool, nixl_router: str, kind: str, stream: bool
) -> None:
    hits, misses, _ = kv_counts([nixl_pool.decoder], "nixl")
    for prompt, expected_route in ((SHORT_PROMPT, "direct"), (LONG_PROMPT, "pd")):
        text, route, _ = await ask(nixl_router, kind, prompt, stream=stream)
        reference, _, _ = await ask(nixl_pool.reference.url, kind, prompt, stream=stream)
        assert (route, text) == (expected_route, reference)
    assert kv_counts([nixl_pool.decoder], "nixl")[:2] == (hits + 1, misses)
    async with httpx.AsyncClient(base_url=nixl_router) as http:
        exposition = (await http.get("/metrics")).text
    waits = metric_sum(exposition, "tandem_router_handoff_wait_seconds_count")
    assert waits == (1 if stream else 0)  # the decode leg's first bytes: a whole answer has no wait apart


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_nixl_eos_on_the_first_token_returns_the_prefill_answer(
    nixl_pool: NixlPool, nixl_router: str, stream: bool
) -> None:
    prompt = LONG_PROMPT + " </s>"  # the simulator's model says EOS first after an EOS in the prompt
    lookups = nixl_pool.decoder.metric("tandem_sim_kv_lookups_total", connector="nixl")
    text, route, _ = await ask(nixl_router, "completion", prompt, stream=stream)
    reference, _, _ = await ask(nixl_pool.reference.url, "completion", prompt, stream=stream)
    assert (route, text) == ("pd", reference)
    assert (
        nixl_pool.decoder.metric("tandem_sim_kv_lookups_total", connector="nixl") == lookups
    )  # no decode leg


@pytest.mark.parametrize("kind", ["completion", "chat"])
async def test_first_token_streams_before_the_kv_wait_and_the_answer_is_unchanged(
    lmcache_pool: LmcachePool, kind: str
) -> None:
    settings = lmcache_settings(
        lmcache_pool, prefill=[lmcache_pool.to_a], ports=lmcache_pool.ports_a, stream_first_token=True
    )
    hits = kv_counts(lmcache_pool.decoders, "lmcache")[0]
    async with router_running(settings) as url:
        text, route, usage = await ask(url, kind, LONG_PROMPT, stream=True)
    reference, _, reference_usage = await ask(lmcache_pool.reference.url, kind, LONG_PROMPT, stream=True)
    assert (route, text) == ("pd", reference)
    assert usage.completion_tokens == reference_usage.completion_tokens
    assert kv_counts(lmcache_pool.decoders, "lmcache")[0] == hits + 1


async def test_missing_notifications_time_out_and_never_decode_early(lmcache_pool: LmcachePool) -> None:
    silent = lmcache_pool.to_a
    settings = lmcache_settings(
        lmcache_pool, prefill=[silent], ports=lmcache_pool.ports_a, handoff_timeout_s=1.0
    )
    before = kv_counts(lmcache_pool.decoders, "lmcache")
    silent.set_faults(drop_notifications=True)
    try:
        async with router_client(settings) as http:
            body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 6}
            answer = await http.post("/v1/completions", json=body)
            metrics = (await http.get("/metrics")).text
    finally:
        silent.set_faults()
    async with httpx.AsyncClient(base_url=lmcache_pool.reference.url, timeout=30) as http:
        reference = (await http.post("/v1/completions", json=body)).json()
    # The handoff is given up (the pair is not used again), and the request is served locally.
    assert answer.status_code == 200 and answer.headers["x-tandem-route"] == "direct"
    assert answer.json()["choices"][0]["text"] == reference["choices"][0]["text"]
    assert metric_sum(metrics, "tandem_router_retries_total", stage="handoff") == 1
    _, misses, early = kv_counts(lmcache_pool.decoders, "lmcache")
    assert (misses, early) == before[1:]  # the decode leg was never sent before the KV was known to be there


async def test_workload_signals_count_what_the_clients_saw(lmcache_pool: LmcachePool) -> None:
    """The autoscaler's view of a router (its parser, operator/autoscale/router_metrics.py) after
    SDK requests: a stream routed direct, one handed off, a whole completion, and a request for a
    model the router does not serve, which names no series."""
    settings = lmcache_settings(lmcache_pool, prefill=[lmcache_pool.to_a], ports=lmcache_pool.ports_a)
    async with router_running(settings) as url, httpx.AsyncClient(base_url=url) as http:
        before = parse_router_metrics((await http.get("/metrics")).text, "static")
        assert before.arrivals == 0  # the series is there before any traffic
        answers = [
            await ask(url, "chat", SHORT_PROMPT, stream=True),
            await ask(url, "chat", LONG_PROMPT, stream=True),
            await ask(url, "completion", SHORT_PROMPT, stream=False),
        ]
        stranger = await http.post("/v1/completions", json={"model": "not/served", "prompt": "hi"})
        exposition = (await http.get("/metrics")).text
    assert stranger.status_code == 404
    assert "not/served" not in exposition
    sample = parse_router_metrics(exposition, "static")
    assert sample.arrivals == 3
    assert [route for _, route, _ in answers] == ["direct", "pd", "direct"]
    usages = [usage for _, _, usage in answers]
    assert sample.histogram(PROMPT_TOKENS).sum == sum(u.prompt_tokens for u in usages)
    assert sample.histogram(OUTPUT_TOKENS).sum == sum(u.completion_tokens for u in usages)
    assert sample.histogram(TTFT_SECONDS).count == 2  # the streams
    streamed_tokens = sum(u.completion_tokens for u in usages[:2])
    # One gap per text chunk after the first: at most one per token after the first (a fast
    # simulator's tokens may share a chunk, and a client sees them together too).
    assert 1 <= sample.histogram(ITL_SECONDS).count <= streamed_tokens - 2
    assert sum(sample.slo.values()) == 2 and sample.slo["failed"] == 0
    assert metric_sum(exposition, "tandem_router_ttft_seconds_count", route="pd") == 1
