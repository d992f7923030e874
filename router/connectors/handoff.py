"""One LMCache handoff's resources and how far it got, and the drainer that ends the handoffs their
request left behind.

A handoff holds its req_id's wait for notifications (the hub), chunks of the decoder's PD buffer
(`pd_buffer.BufferHold`), a tag on that decoder (`tag_lease.TagLease`) and, once sent, the decode
leg's open answer. LMCache 0.5.6 frees a chunk of a decoder's buffer only when a request reads it
(protocols.md): KV pushed for a decode leg that never comes (the client left, the decode leg
failed, the first token ended the answer, the wait timed out) stays until the decoder restarts.
So `close()` is the one way out and always ends the handoff: what is over is freed at once; a
handoff whose KV may be on its way, or in the buffer unread, goes to the `HandoffDrainer`. That
waits for the KV, then has the decoder read it with a one-token decode leg whose answer is
dropped; an open decode leg it reads up to its first token (vLLM loads a request's KV before
computing its first token) and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from enum import Enum

import msgspec

from tandem.router.connectors.base import HandoffJob
from tandem.router.connectors.notify import Arrivals, NotificationHub
from tandem.router.connectors.tag_lease import TagLeases
from tandem.router.endpoints import EndpointRegistry
from tandem.router.engine_http import EngineResponse
from tandem.router.errors import BackendError, RouterError
from tandem.router.pd_buffer import BufferHold, Clock
from tandem.router.sse import SseParser
from tandem.router.upstream import Upstream

log = logging.getLogger(__name__)


class Stage(Enum):
    RESERVED = "reserved"  # nothing sent: no KV anywhere
    PREFILLING = "prefilling"  # the prefill leg is out, unanswered: the prefiller may push KV
    PREFILLED = "prefilled"  # the prefiller ran the prompt: its KV is on its way or in the buffer
    DECODING = "decoding"  # the decode leg is open, and the decoder has not produced a token yet
    READ = "read"  # the decoder has read the KV


class LmcacheHandoff:
    def __init__(
        self, job: HandoffJob, hub: NotificationHub, drainer: HandoffDrainer, tags: TagLeases, clock: Clock
    ) -> None:
        self.job = job
        self.req_id = hub.new_req_id()
        self._hub = hub
        self._drainer = drainer
        chunks = job.pool.routing.pd_chunks(len(job.prompt_ids))
        self._hold = BufferHold(job.decode, chunks, job.buffer, clock)
        self._tag = tags.take(job.decode.url)  # its legs' chunk keys: tag_lease.py
        # Registered before the prefill leg goes out, so no notification can come first.
        self.arrivals: Arrivals = hub.expect(self.req_id, job.pool.kv_notifications)
        self.stage = Stage.RESERVED
        self.first_token: int | None = None
        self.response: EngineResponse | None = None
        self._closed = False

    def prefill_sent(self) -> None:
        self.stage = Stage.PREFILLING

    def prefill_refused(self) -> None:
        """The prefiller refused the leg (4xx): it never ran, so it pushed nothing."""
        self.stage = Stage.RESERVED

    def prefilled(self) -> None:
        """The prefiller answered: it ran the prompt, so it pushes (or pushed) its KV."""
        self.stage = Stage.PREFILLED

    def decoding(self, response: EngineResponse) -> None:
        self.stage, self.response = Stage.DECODING, response

    def read(self) -> None:
        """The decoder produced a token, so it has read the KV out of its buffer."""
        if self.stage is not Stage.READ:
            self.stage = Stage.READ
            self._hold.release()
            self._end_tag()
            self._hub.discard(self.req_id)

    @property
    def kv_tag(self) -> dict[str, str]:
        """The `kv_transfer_params` entry of the handoff's prefill, decode and drain legs."""
        return self._tag.params

    def _end_tag(self) -> None:
        """The tag may serve the next handoff to the decoder once nothing of this one's KV can still
        be on its way there: none was sent, or every notification came."""
        self._tag.end(settled=self.stage is Stage.RESERVED or self.arrivals.complete)

    @property
    def drain_prompt(self) -> list[int]:
        """The decode leg's prompt shape: the decoder looks up the KV of all but the last token
        (`skip_last_n_tokens: 1`), so any token may stand in for an unknown first token."""
        ids = self.job.prompt_ids
        return [*ids, ids[-1] if self.first_token is None else self.first_token]

    def close(self) -> None:
        """End the handoff: now if nothing is left in the decoder's buffer, else in the background."""
        if self._closed:
            return
        self._closed = True
        if self.stage in (Stage.RESERVED, Stage.READ):
            self.finish()
        else:
            self._drainer.take(self)

    def finish(self) -> None:
        """Let go of everything (idempotent)."""
        self._hub.discard(self.req_id)
        self._hold.release()
        self._end_tag()
        if self.response is not None:
            self.response.close()  # a no-op once the answer was read to its end and released


Outcome = Callable[[str, str], None]  # (pool, outcome)
DRAIN_RETRY_S = 0.5


class HandoffDrainer:
    """Ends handoffs in the background. Outcomes: `read` (an open decode leg reached its first
    token), `drained` (the one-token leg read the KV), `unnotified` (the prefill ran but its
    notifications never came: the one-token leg read whatever of its KV reached the decoder),
    `abandoned` (the prefill never answered and no KV came: an aborted prefill sends none),
    `failed` (the decoder did not answer the drain leg).

    A prefill that ran pushed its KV, or had it refused (LMCache sends no notification either way):
    a notification lost (a prefiller that drops it, a router restarting) must not leave the KV in
    the decoder's buffer for good, so after the wait the decoder is asked to read it all the same.
    If none of it is there, the one-token leg costs the decoder a prefill of the prompt."""

    def __init__(
        self,
        upstream: Upstream,
        registry: EndpointRegistry,
        *,
        kv_timeout_s: float,
        drain_timeout_s: float,
        on_outcome: Outcome,
        retry_s: float = DRAIN_RETRY_S,
    ) -> None:
        self._upstream = upstream
        self._registry = registry
        self._kv_timeout_s = kv_timeout_s  # a prefill that never answered: its KV comes soon or never
        self._drain_timeout_s = drain_timeout_s  # a prefill that ran: its KV may wait for buffer room
        self._on_outcome = on_outcome
        self._retry_s = retry_s  # the first wait before a failed drain leg is sent again
        self._pending: dict[asyncio.Task[None], LmcacheHandoff] = {}
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take(self, handoff: LmcacheHandoff) -> None:
        if self._closing:
            handoff.finish()
            return
        task = asyncio.get_running_loop().create_task(self._end(handoff), name=f"drain {handoff.req_id}")
        self._pending[task] = handoff
        task.add_done_callback(self._pending.pop)

    async def close(self) -> None:
        """Stop (at shutdown): handoffs still pending are given up."""
        self._closing = True
        pending = dict(self._pending)
        if pending:
            log.warning("shutting down with %d handoff(s) not drained", len(pending))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for handoff in pending.values():
            handoff.finish()  # a task cancelled before it ran never reached its own

    async def _end(self, handoff: LmcacheHandoff) -> None:
        job = handoff.job
        outcome = "failed"
        try:
            if handoff.stage is Stage.DECODING and await self._first_token(handoff):
                outcome = "read"
                return
            unanswered = handoff.stage is Stage.PREFILLING
            patience = self._kv_timeout_s if unanswered else self._drain_timeout_s
            notified = await handoff.arrivals.wait(patience)
            if not notified:
                log.warning(
                    "handoff %s to %s: %d of %d notifications in %.0f s; %s",
                    handoff.req_id,
                    job.decode.url,
                    handoff.arrivals.got,
                    handoff.arrivals.want,
                    patience,
                    "given up" if unanswered else "reading what reached the decoder",
                )
                if unanswered:
                    outcome = "abandoned"
                    return
            await self._drain_leg(handoff)
            outcome = "drained" if notified else "unnotified"
        except (RouterError, OSError) as exc:  # TimeoutError included
            log.warning("draining handoff %s on %s failed: %s", handoff.req_id, job.decode.url, exc)
        finally:
            handoff.finish()
            self._on_outcome(job.pool.name, outcome)

    async def _first_token(self, handoff: LmcacheHandoff) -> bool:
        """Read the open decode leg until it carries a token; False if it ends (or fails) first."""
        assert handoff.response is not None
        parser = SseParser()
        with contextlib.suppress(OSError, msgspec.DecodeError):  # TimeoutError included
            async with asyncio.timeout(self._drain_timeout_s):
                async for chunk in handoff.response.iter_chunks():
                    for payload in parser.feed(chunk):
                        if parser.is_done(payload):
                            return False
                        answer = msgspec.json.decode(payload)
                        if isinstance(answer, dict) and answer.get("choices"):
                            handoff.read()
                            return True
        return False

    async def _drain_leg(self, handoff: LmcacheHandoff) -> None:
        """The one-token leg; a decoder that fails it (5xx, no answer, a restart under way) is asked
        again, after `retry_s`, then twice as long each time, for as long as a drain timeout: the KV
        stays in its buffer until it reads it. A refusal (4xx) is final."""
        job = handoff.job
        body = {
            "model": job.pool.model,
            "prompt": handoff.drain_prompt,
            "max_tokens": 1,
            "kv_transfer_params": handoff.kv_tag,
        }
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self._drain_timeout_s, self._retry_s
        while True:
            try:
                with self._registry.lease(job.decode):
                    async with asyncio.timeout(self._kv_timeout_s):
                        await self._upstream.post_json(
                            job.decode.url,
                            "/v1/completions",
                            body,
                            f"{job.request.request_id}-drain",
                            job.pool.engine_timeouts,
                        )
                handoff.read()
                return
            except (BackendError, OSError) as exc:  # TimeoutError included
                if loop.time() + delay >= deadline:
                    raise
                log.info(
                    "drain leg of %s on %s: %s; again in %.1f s", handoff.req_id, job.decode.url, exc, delay
                )
            await asyncio.sleep(delay)
            delay *= 2
