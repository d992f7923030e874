"""KV handoffs that end: the router in front of simulator processes (static discovery), against the
answers of one engine.

Every decode leg carries the answer's length budget, so a handoff answers as long as one engine
would (engines here run with a 1024-token context, so an answer without `max_tokens` ends at its
end); a request no engine would serve is refused before its prefill; a handoff whose client left,
or whose first token ended the answer, still has the decoder read its KV, so the decoder's PD
buffer (read off the simulator's `tandem_sim_pd_buffer_*` gauges) frees; decoders' buffers are
admitted against for catalog models; an MLA handoff waits for the one notification MLA sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from prometheus_text import metric_sum
from router_support import (
    LONG_PROMPT,
    MODEL,
    THRESHOLD,
    Addresses,
    Engine,
    LmcachePorts,
    engines_running,
    lmcache_decoder,
    lmcache_prefiller,
    lmcache_router_settings,
    nixl_engine,
    nixl_router_settings,
    router_running,
)

from tandem.api.spec import AttentionKind, KvConnector
from tandem.router.app import RouterApp
from tandem.router.pool import pool_config_from_resource
from tandem.router.settings import RouterSettings

pytestmark = pytest.mark.slow

CONTEXT = ["--max-model-len", "1024"]
# Each handoff's prompt starts differently (LONG_PROMPT behind a prefix of its own): LMCache loads no
# chunk the decoder's own prefix cache already covers (vllm_v1_adapter.py, `need_to_allocate <= 0`),
# so a repeated prompt's pushed chunks are never read, and the buffer could not be seen to free.
CHUNK_BYTES = 256 * 131072  # 256 tokens of the simulator's default 128 KiB a token (Llama-3.1-8B's)


@dataclass
class Pool:
    decoder: Engine  # TP 1, a 2 GiB buffer
    small: Engine  # TP 1, a buffer of three chunks
    mla_decoder: Engine  # an MLA model at TP 2
    prefiller: Engine  # TP 1, notifying `ports.notify` about half a second after its answer
    mla_prefiller: Engine  # an MLA model at TP 2: its first rank alone sends KV, and notifies
    reference: Engine  # aggregated
    nixl_decoder: Engine
    nixl_prefiller: Engine
    ports: LmcachePorts


def slow_transfer(spec: tuple[list[str], dict[str, str]]) -> tuple[list[str], dict[str, str]]:
    """A prefiller whose KV takes about 0.6 s to move (500 tokens at 50 ms, run 50 times faster):
    the window in which a client may leave after the prefill answered and before the KV is in."""
    args, env = spec
    return [*args, "--kv-transfer-ms-per-token", "50"], env


def mla_tp2(spec: tuple[list[str], dict[str, str]]) -> tuple[list[str], dict[str, str]]:
    """An engine of an MLA model at TP 2 (a later --tensor-parallel-size wins over an earlier one)."""
    args, env = spec
    return [*args, "--use-mla", "--tensor-parallel-size", "2"], env


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    hosts = Addresses()
    ports = LmcachePorts.free()
    specs: list[tuple[str, tuple[list[str], dict[str, str]]]] = [
        (host := hosts.take(), lmcache_decoder(host, ports)),
        (host := hosts.take(), lmcache_decoder(host, ports, buffer_bytes=3 * CHUNK_BYTES)),
        (host := hosts.take(), mla_tp2(lmcache_decoder(host, ports, tp=2))),
        (hosts.take(), slow_transfer(lmcache_prefiller(ports))),
        (hosts.take(), mla_tp2(lmcache_prefiller(ports))),
        (hosts.take(), ([], {})),
        (host := hosts.take(), nixl_engine(host)),
        (host := hosts.take(), nixl_engine(host)),
    ]
    specs = [(host, ([*args, *CONTEXT], env)) for host, (args, env) in specs]
    with engines_running(specs) as engines:
        yield Pool(*engines, ports)  # type: ignore[arg-type]


def settings(pool: Pool, decode: Engine, **overrides: Any) -> RouterSettings:
    static = overrides.pop("static", None)
    tuning = {"handoff_timeout_s": 5.0, **overrides}
    return lmcache_router_settings(pool.ports, [decode], [pool.prefiller], static, **tuning)


def nixl_settings(pool: Pool) -> RouterSettings:
    return nixl_router_settings([pool.nixl_decoder], [pool.nixl_prefiller])


async def metric(engine: Engine, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        return metric_sum((await http.get(f"{engine.url}/metrics")).text, name, **labels)


async def buffer_free(decoder: Engine) -> tuple[float, float]:
    """(free chunks, chunks) of the simulated decoder's PD buffer, all ranks."""
    return (
        await metric(decoder, "tandem_sim_pd_buffer_free_chunks"),
        await metric(decoder, "tandem_sim_pd_buffer_chunks"),
    )


async def until_buffer_is_free(decoder: Engine, timeout_s: float = 20.0) -> None:
    """Poll with a deadline: the decoder reads the KV in the background of the client's request."""
    async with asyncio.timeout(timeout_s):
        while (counts := await buffer_free(decoder))[0] != counts[1]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def router_metric(url: str, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        return metric_sum((await http.get(f"{url}/metrics")).text, name, **labels)


async def until_drained(url: str, timeout_s: float = 20.0) -> dict[str, float]:
    """The router's background endings of handoffs, by outcome, once there is one."""
    async with asyncio.timeout(timeout_s):
        while True:
            async with httpx.AsyncClient(timeout=5) as http:
                text = (await http.get(f"{url}/metrics")).text
            outcomes = {
                outcome: metric_sum(text, "tandem_router_handoff_drains_total", outcome=outcome)
                for outcome in ("read", "drained", "abandoned", "failed")
            }
            if any(outcomes.values()):
                return {k: v for k, v in outcomes.items() if v}
            await asyncio.sleep(0.05)


@dataclass
class Answer:
    text: str
    route: str | None
    finish: str | None
    prompt_tokens: int
    completion_tokens: int


async def ask(url: str, kind: str, prompt: str, *, stream: bool, **fields: Any) -> Answer:
    """One request through the official openai SDK, with its defaults (no max_tokens unless given)."""
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60) as sdk:
        options = {"stream_options": {"include_usage": True}} if stream else {}
        if kind == "chat":
            raw: Any = await sdk.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[{"role": "user", "content": prompt}],
                stream=stream,
                **options,
                **fields,
            )
        else:
            raw = await sdk.completions.with_raw_response.create(
                model=MODEL, prompt=prompt, stream=stream, **options, **fields
            )
        route, parsed = raw.headers.get("x-tandem-route"), raw.parse()
        if not stream:
            choice = parsed.choices[0]
            text = choice.message.content if kind == "chat" else choice.text
            usage = parsed.usage
            return Answer(
                text or "", route, choice.finish_reason, usage.prompt_tokens, usage.completion_tokens
            )
        text, finish, usage = "", None, None
        async for chunk in parsed:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text += (choice.delta.content if kind == "chat" else choice.text) or ""
                finish = choice.finish_reason or finish
        assert usage is not None
        return Answer(text, route, finish, usage.prompt_tokens, usage.completion_tokens)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", ["chat", "completion"])
async def test_without_max_tokens_a_handoff_answers_as_long_as_one_engine(
    pool: Pool, kind: str, stream: bool
) -> None:
    """Before: the decode leg, a completions request without a length, stopped at vLLM's default of
    16 tokens: chat answers were cut to 17 tokens (completions answered 17 for 16)."""
    async with router_running(settings(pool, pool.decoder)) as url:
        answer = await ask(url, kind, f"{kind} {stream} {LONG_PROMPT}", stream=stream)
    reference = await ask(pool.reference.url, kind, f"{kind} {stream} {LONG_PROMPT}", stream=stream)
    assert answer.route == "pd"
    assert answer == Answer(
        reference.text, "pd", reference.finish, reference.prompt_tokens, reference.completion_tokens
    )
    if kind == "chat":  # the rest of the context
        assert (answer.completion_tokens, answer.finish) == (1024 - answer.prompt_tokens, "length")
    else:
        assert answer.completion_tokens == 16
    await until_buffer_is_free(pool.decoder)


@pytest.mark.parametrize("connector", [KvConnector.LMCACHE, KvConnector.NIXL])
async def test_max_tokens_beyond_the_context_is_refused_before_any_prefill(
    pool: Pool, connector: KvConnector
) -> None:
    """Before: the prefill ran and pushed its KV, then the decode leg was refused, and the KV stayed
    in the decoder's buffer for good (50 such requests all but filled it)."""
    lmcache = connector is KvConnector.LMCACHE
    prefiller = pool.prefiller if lmcache else pool.nixl_prefiller
    before = await metric(prefiller, "vllm:prompt_tokens_total")
    router = settings(pool, pool.decoder) if lmcache else nixl_settings(pool)
    async with router_running(router) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        for kind, path, prompt in (
            ("max_tokens", "/v1/completions", {"prompt": LONG_PROMPT}),
            (
                "max_completion_tokens",
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": LONG_PROMPT}]},
            ),
        ):
            answer = await http.post(path, json={"model": MODEL, kind: 1_000_000_000, **prompt})
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert error["message"].startswith(f"{kind}=1000000000 cannot be greater than max_model_len=1024")
            assert (error["param"], error["type"]) == (kind, "invalid_request_error")
    assert await metric(prefiller, "vllm:prompt_tokens_total") == before  # no prefill leg was sent
    if lmcache:
        free, chunks = await buffer_free(pool.decoder)
        assert free == chunks


async def test_a_client_leaving_right_after_the_prefill_still_frees_the_decoders_buffer(pool: Pool) -> None:
    """The first token streams before the KV wait; the client leaves on it. Before: the decode leg
    was never sent, and the KV it was pushed stayed in the decoder's buffer until a restart."""
    hits = await metric(pool.decoder, "tandem_sim_kv_hits_total", connector="lmcache")
    async with router_running(settings(pool, pool.decoder, stream_first_token=True)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            body = {"model": MODEL, "prompt": "leaving " + LONG_PROMPT, "max_tokens": 50, "stream": True}
            async with http.stream("POST", "/v1/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break  # the first token: the prefill is done, and the client goes
        assert await until_drained(url) == {"drained": 1}
        await until_buffer_is_free(pool.decoder)
    assert await metric(pool.decoder, "tandem_sim_kv_hits_total", connector="lmcache") == hits + 1


async def test_a_client_leaving_before_the_decoders_first_token_still_has_the_kv_read(pool: Pool) -> None:
    """The decoder holds the decode leg (a delay fault, before it answers even the head) and the
    client gives up meanwhile: the router closes the leg, which the engine drops unread, so it has
    the decoder read the KV with a one-token leg of its own. Before: the KV stayed."""
    pool.decoder.set_faults(delay_ms=3000)
    try:
        async with router_running(settings(pool, pool.decoder)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=1.5) as http:
                body = {"model": MODEL, "prompt": "impatient " + LONG_PROMPT, "max_tokens": 200}
                with pytest.raises(httpx.ReadTimeout):
                    await http.post("/v1/completions", json=body)
            assert await until_drained(url) == {"drained": 1}
            await until_buffer_is_free(pool.decoder)
    finally:
        pool.decoder.set_faults()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_an_answer_its_first_token_ended_still_frees_the_decoders_buffer(
    pool: Pool, stream: bool
) -> None:
    """The simulated model says EOS first after an EOS in the prompt: the prefill answer is the whole
    answer. Its KV went to the decoder all the same; before, nothing read it."""
    prompt = f"{stream} " + LONG_PROMPT + " </s>"
    async with router_running(settings(pool, pool.decoder)) as url:
        answer = await ask(url, "completion", prompt, stream=stream, max_tokens=20)
        assert await until_drained(url) == {"drained": 1}
        await until_buffer_is_free(pool.decoder)
    reference = await ask(pool.reference.url, "completion", prompt, stream=stream, max_tokens=20)
    assert (answer.route, answer.text, answer.finish) == ("pd", reference.text, "stop")


def catalog_pool(pool: Pool, buffer_bytes: int) -> dict[str, Any]:
    """An InferencePool of a catalog model (no spec.model.architecture) whose decoders' buffers
    hold `buffer_bytes`; named as the static pool, so the router takes it as that pool's resource."""
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "static", "namespace": "default"},
        "spec": {
            "model": {"name": MODEL},
            "accelerator": {"type": "H100-80GB"},
            "disaggregation": {
                "promptTokensThreshold": THRESHOLD,
                "kvTransfer": {
                    "lmcache": {
                        "decoderBufferBytes": buffer_bytes,
                        "peerInitPort": pool.ports.init,
                        "peerAllocPort": pool.ports.alloc,
                    }
                },
            },
        },
    }


async def test_a_catalog_models_decoder_buffer_is_admitted_against(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The small decoder holds three chunks, what a handoff of the long prompt takes; one is in
    flight (its decode leg held by a delay fault), so the next does not fit and is served locally at
    once. Before: a model without spec.model.architecture was not tracked, so the second went to
    the decoder, whose receiver waited for room (as LMCache's does), past the handoff timeout."""
    from tandem.planner import catalog

    # The simulated model stands in for Llama-3.1-8B: 128 KiB of KV a token, as the simulator's.
    llama = catalog.load_catalog().model("meta-llama/Llama-3.1-8B")
    monkeypatch.setattr(catalog.Catalog, "model", lambda self, name: llama.model_copy(update={"name": name}))
    config = pool_config_from_resource(
        catalog_pool(pool, 3 * CHUNK_BYTES), default_threshold=THRESHOLD, prefill_saturation=16
    )
    assert config.decoder_buffer_chunks == 3
    async with httpx.AsyncClient(timeout=5) as http:
        tokens = (
            await http.post(f"{pool.reference.url}/tokenize", json={"prompt": "first " + LONG_PROMPT})
        ).json()
    assert -(-tokens["count"] // 256) == 3
    router = settings(pool, pool.small, handoff_timeout_s=10.0)
    app = RouterApp(router)
    pool.small.set_faults(delay_ms=1500)
    try:
        async with router_running(router, app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert app.services is not None
            app.services.state.set_pool(config)

            async def complete(prompt: str) -> httpx.Response:
                return await http.post(
                    "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 4}
                )

            first = asyncio.create_task(complete("first " + LONG_PROMPT))
            await until(lambda: buffer_held(app) == 3)
            second = await complete("second " + LONG_PROMPT)
            assert second.headers["x-tandem-route"] == "direct"
            assert (await first).headers["x-tandem-route"] == "pd"
            metrics = (await http.get("/metrics")).text
    finally:
        pool.small.set_faults()
    assert metric_sum(metrics, "tandem_router_fallbacks_total", reason="decode_pd_buffer_full") == 1
    assert metric_sum(metrics, "tandem_router_retries_total", stage="handoff") == 0
    await until_buffer_is_free(pool.small)


def buffer_held(app: RouterApp) -> int:
    assert app.services is not None
    return sum(s.buffer_reserved for s in app.services.state.registry)


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_an_mla_handoff_completes_on_the_one_notification_mla_sends(pool: Pool) -> None:
    """LMCache stores an MLA model's KV from the first TP rank only (`save_only_first_rank` defaults
    to `use_mla`), so one notification comes whatever the TP. Before: the router waited for one per
    rank, timed out and served the request locally."""
    router = settings(
        pool,
        pool.mla_decoder,
        static={"prefill": (pool.mla_prefiller.url,), "decode_tp": 2, "attention": AttentionKind.MLA},
    )
    hits = await metric(pool.mla_decoder, "tandem_sim_kv_hits_total", connector="lmcache")
    async with router_running(router) as url:
        answer = await ask(url, "completion", f"mla {LONG_PROMPT}", stream=False, max_tokens=12)
        assert await router_metric(url, "tandem_router_kv_notifications_total", disposition="own") == 1
        assert await router_metric(url, "tandem_router_retries_total") == 0
    reference = await ask(pool.reference.url, "completion", f"mla {LONG_PROMPT}", stream=False, max_tokens=12)
    assert (answer.route, answer.text) == ("pd", reference.text)
    assert await metric(pool.mla_decoder, "tandem_sim_kv_hits_total", connector="lmcache") == hits + 1
    await until_buffer_is_free(pool.mla_decoder)
