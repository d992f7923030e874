"""Decoders' LMCache PD buffers under the hazards of LMCache 0.5.6 (issue #11), the router in front
of simulator processes started with the command lines and LMCache files the operator renders for
`examples/simulator-pool.yaml` (Llama-3.1-8B, 64 chunks of 32 MiB a decoder).

- A decoder with prefix caching leaks the handed-off chunks its own prefix cache covers: LMCache
  loads nothing for them (`integration/vllm/vllm_v1_adapter.py` 1451-1531, `need_to_allocate <= 0`;
  `start_load_kv` masks them out, 817-823) and its receiver frees a chunk only when a request reads
  it (`v1/storage_backend/pd_backend_async.py`, `remove`). The operator renders
  `--no-enable-prefix-caching` on LMCache decoders; the same decoder with prefix caching back on
  shows the leak, so the flag is what makes the difference.
- A decoder whose buffer is full of chunks the router does not know of (leaked before it started,
  or by another router) makes each handoff to it wait for room that does not come: LMCache's
  receiver waits (`pd_allocation_timeout_sec`) where the simulator used to refuse at once. Before
  the router admitted handoffs against decoders' buffers, every long request then paid the whole
  handoff timeout; now a handoff that waits keeps its chunks counted until it is drained, so a
  decoder takes at most its share of them and then none until they end.
- Bad messages on the notification port from a real prefiller: the router serves on.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml
from operator_cases import engine_container, example_spec, find, layout, render
from prometheus_text import metric_sum
from router_support import (
    LONG_PROMPT,
    Addresses,
    Engine,
    LmcachePorts,
    engines_running,
    eventually,
    lmcache_router_settings,
    router_client,
)

from tandem.api.spec import DisaggregationMode
from tandem.operator.build.connectors.lmcache import LMCACHE_CONFIG_KEY
from tandem.router.settings import RouterSettings

pytestmark = pytest.mark.slow

MODEL = "meta-llama/Llama-3.1-8B-Instruct"  # the example's
BUFFER_CHUNKS = 64  # the example's 2 GiB at 32 MiB a chunk (Llama-3.1-8B, TP 1)
SMALL_BUFFER_CHUNKS = 6  # two handoffs of the long prompt
CHUNK_BYTES = 2 * 1024**3 // BUFFER_CHUNKS


def rendered(role: str, decoder_buffer_bytes: int | None = None) -> tuple[list[str], dict[str, Any]]:
    """The example pool's engine arguments for `role` (without `--port`, which the test assigns)
    and its LMCache configuration."""
    changes: dict[str, Any] = {"disaggregation": {"mode": "Always"}}
    if decoder_buffer_bytes is not None:
        changes["disaggregation"]["kvTransfer"] = {"lmcache": {"decoderBufferBytes": decoder_buffer_bytes}}
    spec = example_spec("simulator-pool.yaml", **changes)
    objects = render(spec, layout(spec))
    args = list(engine_container(objects, "llama", role)["args"])
    port = args.index("--port")
    del args[port : port + 2]
    config = yaml.safe_load(find(objects, "ConfigMap", f"llama-{role}-lmcache")["data"][LMCACHE_CONFIG_KEY])
    return args, config


def config_file(config: dict[str, Any]) -> str:
    with tempfile.NamedTemporaryFile("w", prefix="tandem-lmcache-", suffix=".yaml", delete=False) as handle:
        json.dump(config, handle)
        return handle.name


def decoder(
    host: str,
    ports: LmcachePorts,
    *,
    buffer_bytes: int | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[list[str], dict[str, str]]:
    args, config = rendered("decode", buffer_bytes)
    config.update(pd_peer_host=host, pd_peer_init_port=[ports.init], pd_peer_alloc_port=[ports.alloc])
    return [*args, *extra], {"LMCACHE_CONFIG_FILE": config_file(config)}


def prefiller(ports: LmcachePorts) -> tuple[list[str], dict[str, str]]:
    args, config = rendered("prefill")
    config.update(pd_proxy_host="127.0.0.1", pd_proxy_port=ports.notify)
    return args, {"LMCACHE_CONFIG_FILE": config_file(config)}


@dataclass
class Pool:
    uncached: Engine  # as rendered: --no-enable-prefix-caching
    cached: Engine  # the same, with --enable-prefix-caching after it
    small: Engine  # as rendered, with a buffer of SMALL_BUFFER_CHUNKS
    prefiller: Engine
    ports: LmcachePorts


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    hosts = Addresses()
    ports = LmcachePorts.free()
    specs = [
        (host := hosts.take(), decoder(host, ports)),
        (host := hosts.take(), decoder(host, ports, extra=("--enable-prefix-caching",))),
        (
            host := hosts.take(),
            decoder(host, ports, buffer_bytes=SMALL_BUFFER_CHUNKS * CHUNK_BYTES),
        ),
        (hosts.take(), prefiller(ports)),
    ]
    with engines_running(specs) as engines:
        yield Pool(*engines, ports)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_faults_left(pool: Pool) -> Iterator[None]:
    yield
    for engine in (pool.uncached, pool.cached, pool.small, pool.prefiller):
        engine.set_faults()


def settings(
    pool: Pool,
    decode: Engine,
    chunks: int,
    mode: DisaggregationMode = DisaggregationMode.AUTO,
    **tuning: Any,
) -> RouterSettings:
    static = {"model": MODEL, "mode": mode, "decoder_buffer_chunks": chunks}
    tuning = {"handoff_timeout_s": 5.0, **tuning}
    return lmcache_router_settings(pool.ports, [decode], [pool.prefiller], static, **tuning)


async def buffer(engine: Engine) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        rank: dict[str, Any] = (await http.get(f"{engine.url}/admin/pd_buffer")).json()["ranks"][0]
        return rank


async def complete(http: httpx.AsyncClient, prompt: str) -> httpx.Response:
    answer = await http.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 4})
    assert answer.status_code == 200, answer.text
    return answer


async def router_metrics(http: httpx.AsyncClient) -> str:
    return (await http.get("/metrics")).text


async def until_metric(http: httpx.AsyncClient, name: str, value: float) -> None:
    async def reached() -> bool:
        return metric_sum(await router_metrics(http), name) == value

    await eventually(reached, f"{name} == {value}", within_s=20)


@pytest.mark.parametrize("prefix_caching", [False, True], ids=["as-rendered", "prefix-caching-on"])
async def test_a_repeated_prompt_leaks_decoder_chunks_only_with_prefix_caching(
    pool: Pool, prefix_caching: bool
) -> None:
    """The same long prompt (a conversation's shared start) handed off three times to one decoder."""
    engine = pool.cached if prefix_caching else pool.uncached
    prompt = f"{prefix_caching} {LONG_PROMPT}"
    async with router_client(settings(pool, engine, BUFFER_CHUNKS)) as http:
        answers = [await complete(http, prompt) for _ in range(3)]
    assert [a.headers["x-tandem-route"] for a in answers] == ["pd"] * 3
    # Each answer ends after its decode leg's first token, which reads the KV: what is left is left.
    state = await buffer(engine)
    if prefix_caching:
        # The second turn's first two chunks lie under the prefix the decoder cached, never read.
        # The third turn, under the same tag (tag_lease.py), finds them held and pins them (one more
        # reference each, never dropped) instead of leaving two more: they stay, but do not pile up.
        assert state["used"] == 2
    else:
        assert state["used"] == 0 and state["free"] == BUFFER_CHUNKS


async def test_an_exhausted_decoder_buffer_costs_at_most_its_share_of_handoff_timeouts(pool: Pool) -> None:
    """Every chunk of the small decoder's buffer held by nobody, as leaked chunks are: each handoff
    to it waits for room (the rendered pd_allocation_timeout_sec, then the decoder rolls it back).
    Two handoffs fill the router's count of that buffer and pay the handoff timeout; the next long
    requests are served locally at once; the decoder is reported starved; once room is back and
    those two handoffs are drained, handoffs go to it again."""
    pool.small.set_faults(pd_buffer_held_chunks=SMALL_BUFFER_CHUNKS)
    tuning = {"handoff_timeout_s": 1.0, "handoff_drain_timeout_s": 3.0}
    async with router_client(settings(pool, pool.small, SMALL_BUFFER_CHUNKS, **tuning)) as http:
        answers = [await complete(http, f"held {n} {LONG_PROMPT}") for n in range(6)]
        assert [a.headers["x-tandem-route"] for a in answers] == ["direct"] * 6
        text = await router_metrics(http)
        assert metric_sum(text, "tandem_router_retries_total", stage="handoff") == 2
        assert metric_sum(text, "tandem_router_fallbacks_total", reason="decode_pd_buffer_full") == 4
        assert metric_sum(text, "tandem_router_decoder_pd_buffer_free_chunks") == 0
        await until_metric(http, "tandem_router_decoder_pd_buffer_starved", 1)
        pool.small.set_faults()
        await until_metric(http, "tandem_router_decoder_pd_buffer_free_chunks", SMALL_BUFFER_CHUNKS)
        assert metric_sum(await router_metrics(http), "tandem_router_decoder_pd_buffer_starved") == 0
        again = await complete(http, f"held again {LONG_PROMPT}")
        assert again.headers["x-tandem-route"] == "pd"
        text = await router_metrics(http)
    assert metric_sum(text, "tandem_router_handoff_drains_total") == 2
    assert (await buffer(pool.small))["used"] == 0


async def test_a_request_the_decoder_prefills_itself_leaves_a_handoffs_chunks_alone(pool: Pool) -> None:
    """Every request a decoder serves looks its prompt up in the PD buffer and frees what it reads,
    so a request it prefills itself that starts like a handoff's prompt (a shared system prompt)
    used to read the handoff's first chunk; the handoff's own reader then found no leading chunk,
    read nothing, and the rest stayed for good. The router tags each handoff's chunks as its own.

    The handoff's notification is dropped (mode Always: no local fallback reads it), so its KV
    waits in the buffer for the router's drain; meanwhile a request sharing its first chunk comes
    to the decoder directly."""
    pool.prefiller.set_faults(drop_notifications=True)
    tuning = {"handoff_timeout_s": 1.0, "handoff_drain_timeout_s": 4.0}
    router = settings(pool, pool.uncached, BUFFER_CHUNKS, DisaggregationMode.ALWAYS, **tuning)
    prompt = f"shared system prompt {LONG_PROMPT}"
    async with httpx.AsyncClient(timeout=30) as engine:
        ids = (await engine.post(f"{pool.uncached.url}/tokenize", json={"prompt": prompt})).json()["tokens"]
        assert len(ids) > 2 * 256
        async with router_client(router) as http:
            answer = await http.post(
                "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 4}
            )
            assert answer.status_code == 503, answer.text  # no notification, nowhere else to go
            assert (await buffer(pool.uncached))["used"] == 3  # the handoff's KV, unread
            local = {"model": MODEL, "prompt": [*ids[:256], *range(1000, 1100)], "max_tokens": 1}
            assert (await engine.post(f"{pool.uncached.url}/v1/completions", json=local)).status_code == 200
            await until_metric(http, "tandem_router_handoff_drains_total", 1)
            text = await router_metrics(http)
    assert metric_sum(text, "tandem_router_handoff_drains_total", outcome="unnotified") == 1
    assert (await buffer(pool.uncached))["used"] == 0


@pytest.mark.parametrize("kind", ["oversized", "malformed", "wrong_type", "multipart"])
async def test_bad_messages_from_a_prefiller_on_the_notification_port_leave_the_router_serving(
    pool: Pool, kind: str
) -> None:
    """The prefiller pushes a bad message (a 16 MiB notification, bytes that are not msgpack, a
    wrongly typed one, two frames) before each real one. Before, a 400 MB frame took the router to
    981 MB. Now the oversized frame cuts the prefiller's connection before it is read (a real
    notification already written behind it on that connection is lost with it: that handoff times
    out and is served locally; one still queued goes over the new connection), and the others are
    counted and dropped, the real one counted."""
    pool.prefiller.set_faults(junk_notification=kind)
    async with router_client(settings(pool, pool.uncached, BUFFER_CHUNKS, handoff_timeout_s=2.0)) as http:
        answers = [await complete(http, f"{kind} {n} {LONG_PROMPT}") for n in range(2)]
        text = await router_metrics(http)
    routes = [a.headers["x-tandem-route"] for a in answers]
    if kind == "oversized":  # each handoff served, whether its notification survived the cut or not
        assert set(routes) <= {"pd", "direct"}
        assert metric_sum(text, "tandem_router_kv_notify_disconnects_total") >= 1
    else:
        assert routes == ["pd"] * 2
        assert metric_sum(text, "tandem_router_kv_notifications_total", disposition="invalid") == 2
        assert metric_sum(text, "tandem_router_kv_notifications_total", disposition="own") == 2
    assert pool.prefiller.metric("tandem_sim_faults_injected_total", fault="junk_notification") >= 2
