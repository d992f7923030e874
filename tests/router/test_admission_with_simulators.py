"""Admission under overload, end to end: a router in front of a simulator process, one request at
a time per decoder, a queue of long and short answers. FIFO serves them in arrival order;
cost-optimized serves the short ones first (their predicted GPU time is a fraction of the long
ones'); adaptive does as FIFO while the queue keeps up, then switches as the waits grow."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from prometheus_text import metric_sum
from router_support import MODEL, Addresses, Engine, engines_running, free_port, router_client

from tandem.api.spec import AdmissionPolicy
from tandem.router.settings import RouterSettings, StaticPoolSettings

pytestmark = pytest.mark.slow

# A decode step of 100 ms, at the simulator's speed of 50: 2 ms a token.
SLOW_DECODE = ["--decode-step-base-ms", "100"]
LONG, SHORT = "long", "short"
# A long request's prompt is some 7,500 tokens (by the router's estimate): with EngineTiming's
# defaults (static mode) its prefill alone is predicted at 0.4 s of GPU, which the aging weighs
# as 4 s of waiting; a short one's, a few milliseconds.
PROMPTS = {LONG: "word " * 6000, SHORT: "Tell me a story."}
ARRIVALS = [LONG, SHORT, LONG, SHORT, LONG, SHORT]


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with engines_running([(Addresses().take(), (SLOW_DECODE, {}))]) as engines:
        yield engines[0]


def settings_for(engine: Engine, admission: AdmissionPolicy) -> RouterSettings:
    static = StaticPoolSettings(model=MODEL, decode=(engine.url,), admission=admission, ttft_ms=200)
    return RouterSettings(
        host="127.0.0.1",
        port=free_port(),
        notify_port=free_port(),
        static=static,
        max_inflight_per_decode=1,  # one at a time: the rest wait in the router's queue
    )


async def served_order(http: httpx.AsyncClient) -> list[str]:
    """The requests in the order they finished, queued behind a blocker in ARRIVALS' order."""
    done: list[str] = []

    async def ask(kind: str, tokens: int = 10) -> None:
        body = {"model": MODEL, "prompt": PROMPTS[kind], "max_tokens": tokens, "ignore_eos": True}
        answer = await http.post("/v1/completions", json=body)
        assert answer.status_code == 200, answer.text
        done.append(kind)

    blocker = asyncio.create_task(ask(SHORT, 400))  # about 0.8 s: the others queue behind it
    await asyncio.sleep(0.1)
    queued = []
    for kind in ARRIVALS:
        queued.append(asyncio.create_task(ask(kind)))
        await asyncio.sleep(0.02)
    await asyncio.gather(blocker, *queued)
    return done[1:]


async def test_fifo_serves_the_queue_in_arrival_order(engine: Engine) -> None:
    async with router_client(settings_for(engine, AdmissionPolicy.FIFO)) as http:
        assert await served_order(http) == ARRIVALS


async def test_cost_optimized_serves_the_short_answers_first_under_overload(engine: Engine) -> None:
    async with router_client(settings_for(engine, AdmissionPolicy.COST_OPTIMIZED)) as http:
        assert await served_order(http) == [SHORT, SHORT, SHORT, LONG, LONG, LONG]


async def test_adaptive_leaves_fifo_when_the_queue_waits_near_the_target(engine: Engine) -> None:
    async with router_client(settings_for(engine, AdmissionPolicy.ADAPTIVE)) as http:
        for _ in range(3):
            await served_order(http)
        text = (await http.get("/metrics")).text
    assert metric_sum(text, "tandem_router_admission_mode", mode="fifo") == 0
    assert metric_sum(text, "tandem_router_admission_mode", mode="cost-optimized") == 1
