"""One LMCache handoff's way out, by how far it got: `close()` frees at once what holds nothing in
the decoder's buffer, and hands the rest to the drainer, which has the decoder read the KV (with a
one-token leg, or by reading an open decode leg to its first token) or gives up when none came."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from tandem.devcluster.processes import free_port
from tandem.router.client_request import Kind, parse_client_request
from tandem.router.connectors import HandoffDrainer, HandoffJob, LmcacheHandoff, NotificationHub
from tandem.router.connectors.tag_lease import TagLeases
from tandem.router.decision import Role, RoutingPolicy
from tandem.router.endpoints import EndpointAddress, EndpointRegistry, EndpointState
from tandem.router.errors import BackendUnreachableError, EngineServerError
from tandem.router.pd_buffer import share_of
from tandem.router.pool import PoolConfig

IDS = list(range(600))  # three chunks of 256


class FakeUpstream:
    def __init__(self, fail: bool = False, failures: int = 0) -> None:
        self.posts: list[tuple[str, str, dict[str, Any], str]] = []
        self.fail = fail
        self.failures = failures  # the first calls that fail, then they succeed

    async def post_json(
        self, url: str, path: str, payload: dict[str, Any], request_id: str, timeouts: object = None
    ) -> dict[str, Any]:
        self.posts.append((url, path, payload, request_id))
        if self.fail or len(self.posts) <= self.failures:
            raise EngineServerError(url, 500) if self.failures else BackendUnreachableError(url, "refused")
        return {"choices": [{"text": "x"}]}


class FakeResponse:
    """An open decode leg: SSE chunks as the engine would send them."""

    def __init__(self, *events: dict[str, Any]) -> None:
        self.events = events
        self.closed = False

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for payload in self.events:
            yield b"data: " + msgspec.json.encode(payload) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        self.closed = True


class Rig:
    def __init__(self, upstream: FakeUpstream) -> None:
        port = free_port()
        self.hub = NotificationHub(f"127.0.0.1:{port}", "127.0.0.1", port, lambda _: False)
        self.outcomes: list[tuple[str, str]] = []
        self.upstream = upstream
        self.drainer = HandoffDrainer(
            upstream,  # type: ignore[arg-type]
            EndpointRegistry(),
            kv_timeout_s=0.05,
            drain_timeout_s=0.2,
            on_outcome=lambda pool, outcome: self.outcomes.append((pool, outcome)),
            retry_s=0.01,
        )
        self.decoder = EndpointState(EndpointAddress("http://10.0.0.1:8000"), "p", Role.DECODE)
        prefiller = EndpointState(EndpointAddress("http://10.0.0.2:8000"), "p", Role.PREFILL)
        request = parse_client_request(Kind.COMPLETION, b'{"prompt": "x", "max_tokens": 9}', "req-1")
        config = PoolConfig(name="p", model="m", routing=RoutingPolicy(pd_chunk_tokens=256))
        self.job = HandoffJob(request, config, self.decoder, prefiller, IDS, 9, share_of(10, 1, 1))
        self.tags = TagLeases("ns")

    def handoff(self) -> LmcacheHandoff:
        return LmcacheHandoff(self.job, self.hub, self.drainer, self.tags, lambda: 0.0)

    def next_tag(self) -> str:
        """The tag the decoder's next handoff takes (and gives back at once)."""
        handoff = self.handoff()
        handoff.close()
        return handoff.kv_tag["lmcache.tag.tandem_handoff"]

    def arrived(self) -> LmcacheHandoff:
        """A handoff whose prefill answered (without a first token) and whose KV is in."""
        handoff = self.handoff()
        handoff.prefill_sent()
        handoff.prefilled()
        handoff.arrivals.arrive()
        return handoff

    async def settled(self) -> None:
        """Poll with a deadline until the drainer is idle (its tasks set no event of their own)."""
        async with asyncio.timeout(10):
            while self.drainer.pending:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.drainer.close()
        await self.hub.close()


@contextlib.asynccontextmanager
async def rig_on(upstream: FakeUpstream) -> AsyncIterator[Rig]:
    made = Rig(upstream)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with rig_on(FakeUpstream()) as made:
        yield made


def waiting(hub: NotificationHub) -> int:
    return len(hub._waiting)


async def test_a_handoff_that_sent_nothing_frees_everything_at_once(rig: Rig) -> None:
    handoff = rig.handoff()
    assert rig.decoder.buffer_reserved == 3 and waiting(rig.hub) == 1
    handoff.prefill_sent()
    handoff.prefill_refused()  # the prefiller answered 4xx: it never ran the prompt
    handoff.close()
    assert rig.decoder.buffer_reserved == 0 and waiting(rig.hub) == 0
    assert rig.drainer.pending == 0 and rig.upstream.posts == []
    assert rig.next_tag() == "ns.h0"  # it pushed nothing: its tag serves the next handoff


async def test_a_read_handoff_frees_everything_at_once(rig: Rig) -> None:
    handoff = rig.arrived()
    handoff.read()
    assert rig.decoder.buffer_reserved == 0 and waiting(rig.hub) == 0
    assert rig.next_tag() == "ns.h0"  # read: the tag is free while the decode leg runs on
    handoff.close()
    assert rig.drainer.pending == 0 and rig.upstream.posts == []


async def test_handoffs_in_flight_to_one_decoder_carry_different_tags(rig: Rig) -> None:
    """Under one tag the second would pin the first's chunks (already_sent_indexes) and read them
    while they may still be written (tag_lease.py)."""
    first, second = rig.handoff(), rig.handoff()
    assert (first.kv_tag, second.kv_tag) == (
        {"lmcache.tag.tandem_handoff": "ns.h0"},
        {"lmcache.tag.tandem_handoff": "ns.h1"},
    )
    first.close()
    assert rig.next_tag() == "ns.h0"
    second.close()


async def test_unread_kv_is_read_by_a_one_token_leg_once_it_has_arrived(rig: Rig) -> None:
    handoff = rig.handoff()
    handoff.prefill_sent()
    handoff.prefilled()
    handoff.first_token = 7
    handoff.close()  # the client left, or the first token ended the answer
    await asyncio.sleep(0.05)
    assert rig.upstream.posts == [] and rig.decoder.buffer_reserved == 3  # never before the KV is in
    handoff.arrivals.arrive()
    await rig.settled()
    ((url, path, body, request_id),) = rig.upstream.posts
    assert (url, path, request_id) == ("http://10.0.0.1:8000", "/v1/completions", "req-1-drain")
    tag = {"lmcache.tag.tandem_handoff": "ns.h0"}  # the chunks its prefill leg pushed
    assert body == {"model": "m", "prompt": [*IDS, 7], "max_tokens": 1, "kv_transfer_params": tag}
    assert rig.decoder.buffer_reserved == 0 and waiting(rig.hub) == 0
    assert rig.outcomes == [("p", "drained")]
    assert rig.next_tag() == "ns.h0"  # all its KV came and was read: nothing of it is on its way


async def test_without_a_first_token_any_token_stands_in(rig: Rig) -> None:
    """The decoder looks up the KV of all but the decode prompt's last token (skip_last_n_tokens)."""
    rig.arrived().close()
    await rig.settled()
    assert rig.upstream.posts[0][2]["prompt"] == [*IDS, IDS[-1]]


async def test_kv_of_a_prefill_that_never_answered_is_given_up(rig: Rig) -> None:
    handoff = rig.handoff()
    handoff.prefill_sent()
    handoff.close()
    await rig.settled()
    assert rig.upstream.posts == [] and rig.outcomes == [("p", "abandoned")]
    assert rig.decoder.buffer_reserved == 0 and waiting(rig.hub) == 0
    assert rig.next_tag() == "ns.h1"  # its KV may come yet: a later handoff must not pin it


async def test_kv_of_a_prefill_whose_notifications_never_come_is_read_all_the_same(rig: Rig) -> None:
    """The prefill ran, so its KV may be in the decoder's buffer with its notification lost (a
    prefiller that drops it). Before, the handoff was given up and that KV stayed for good."""
    handoff = rig.handoff()
    handoff.prefill_sent()
    handoff.prefilled()
    handoff.first_token = 7
    handoff.close()
    await rig.settled()
    ((url, _, body, _),) = rig.upstream.posts
    assert url == "http://10.0.0.1:8000" and body["prompt"] == [*IDS, 7]
    assert rig.outcomes == [("p", "unnotified")]
    assert rig.decoder.buffer_reserved == 0 and waiting(rig.hub) == 0
    assert rig.next_tag() == "ns.h1"  # read without its notifications: writes may be on their way


async def test_an_open_decode_leg_is_read_to_its_first_token(rig: Rig) -> None:
    handoff = rig.arrived()
    response = FakeResponse(
        {"choices": [{"text": " a", "finish_reason": None}]}, {"choices": [{"text": " b"}]}
    )
    handoff.decoding(response)  # type: ignore[arg-type]
    handoff.close()  # the client left before the decoder's first token
    await rig.settled()
    assert rig.outcomes == [("p", "read")] and rig.upstream.posts == []
    assert response.closed and rig.decoder.buffer_reserved == 0
    assert rig.next_tag() == "ns.h0"


async def test_a_decode_leg_that_ends_without_a_token_is_drained(rig: Rig) -> None:
    handoff = rig.arrived()
    handoff.decoding(FakeResponse({"error": {"message": "engine trouble"}}))  # type: ignore[arg-type]
    handoff.close()
    await rig.settled()
    assert rig.outcomes == [("p", "drained")] and len(rig.upstream.posts) == 1


async def test_a_drain_leg_the_decoder_refuses_is_counted_and_frees_the_hold() -> None:
    async with rig_on(FakeUpstream(fail=True)) as rig:
        rig.arrived().close()
        await rig.settled()
        assert rig.outcomes == [("p", "failed")] and rig.decoder.buffer_reserved == 0
        # Every write done: the chunks left unread are whole, the prefix's KV for a later leg under the tag.
        assert rig.next_tag() == "ns.h0"


async def test_a_drain_leg_the_decoder_fails_is_sent_again_until_it_reads_the_kv() -> None:
    """A decoder answering 500 (or restarting) when the drain leg comes. Before, one failure gave
    the handoff up, and its KV stayed in the decoder's buffer for good."""
    async with rig_on(FakeUpstream(failures=2)) as rig:
        rig.arrived().close()
        await rig.settled()
        assert len(rig.upstream.posts) == 3 and rig.outcomes == [("p", "drained")]
        assert rig.decoder.buffer_reserved == 0


async def test_shutdown_gives_pending_handoffs_up(rig: Rig) -> None:
    handoff = rig.handoff()
    handoff.prefill_sent()
    handoff.prefilled()
    handoff.close()
    assert rig.drainer.pending == 1
    await rig.drainer.close()
    assert rig.drainer.pending == 0 and rig.decoder.buffer_reserved == 0
    assert rig.tags.held(rig.decoder.url) == 0
    late = rig.handoff()
    late.prefill_sent()
    late.close()  # after shutdown: freed at once
    assert rig.drainer.pending == 0 and rig.decoder.buffer_reserved == 0
