"""LMCache PD handoff: prefill with the decoder named in `disagg_spec`, await the KV, then decode.

1. The prompt's token ids (the router tokenized it: the decode leg sends ids, not text).
2. Prefill: `/v1/completions` (for chat too) with `max_tokens: 1` and `kv_transfer_params:
   {ret_first_tok, disagg_spec{req_id, receiver_host, receiver_init_port[], receiver_alloc_port[]},
   lmcache.tag.tandem_handoff}` (a tag no other handoff in flight to that decoder holds, which
   handoffs of prompts sharing a prefix take in turn: tag_lease.py);
   the answer's `kv_transfer_params.first_tok` is the first token.
3. One `ProxyNotif` per prefiller rank that sends KV (`PoolConfig.kv_notifications`: TP ranks,
   one for MLA) says the KV is in the decoder's buffer. The prefill answer does not: a decode sent
   before the notifications would recompute or read half-written chunks, so the decode never goes
   early; a timeout fails the handoff (the caller may retry elsewhere).
4. Decode: `prompt: ids + [first_tok]`, `max_tokens: budget - 1` (the answer's length budget, always
   explicit: a completions request without one would stop at vLLM's default of 16) and the tag, on the decoder
   chosen in step 2, streamed even for a whole answer, so the router sees the decoder start (and
   so read the KV); the answer is composed for the client (first token in front, chat chunks for
   chat).
However it ends, the handoff ends with the decoder reading the KV it was sent (handoff.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from tandem.api.spec import AttentionKind
from tandem.planner.kv_cache import kv_sending_ranks
from tandem.router.client_request import ClientRequest
from tandem.router.compose import AnswerComposer
from tandem.router.connectors.base import Connector, ConnectorServices, Failed, HandoffJob
from tandem.router.connectors.handoff import HandoffDrainer, LmcacheHandoff
from tandem.router.connectors.notify import NotificationHub
from tandem.router.connectors.tag_lease import TagLeases, new_namespace
from tandem.router.endpoints import EndpointRegistry
from tandem.router.errors import (
    BackendError,
    EngineRejectedError,
    Failure,
    HandoffTimeoutError,
    PrefillFailedError,
    RouterError,
)
from tandem.router.pd_buffer import Clock
from tandem.router.reply import SSE_CONTENT_TYPE, Reply
from tandem.router.sse import DONE, SseParser, error_event, event, payload_event, replay
from tandem.router.tracing import DECODE, KV_WAIT
from tandem.router.upstream import Upstream, broken_off, decode_object

log = logging.getLogger(__name__)

# Chat fields with no completions counterpart. Requests that need them to be honoured (tools,
# response_format, logprobs) are not split at all (ClientRequest.splittable).
_CHAT_ONLY = frozenset(
    {
        "messages",
        "max_completion_tokens",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "chat_template",
        "chat_template_kwargs",
        "add_generation_prompt",
        "continue_final_message",
        "documents",
        "mm_processor_kwargs",
        "reasoning_effort",
        "modalities",
        "audio",
        "store",
        "metadata",
        "prediction",
        "web_search_options",
    }
)


def sampling_fields(request: ClientRequest, model: str) -> dict[str, Any]:
    """The client's sampling parameters, as a completions request body for the pool's model."""
    body = {
        k: v for k, v in request.body.items() if k not in _CHAT_ONLY and k not in ("prompt", "max_tokens")
    }
    body["model"] = model
    return body


def prefill_body(job: HandoffJob, req_id: str, decoder_host: str, tag: dict[str, str]) -> dict[str, Any]:
    init_ports, alloc_ports = job.pool.receiver_ports()
    body = sampling_fields(job.request, job.pool.model)
    for key in ("stream_options", "min_tokens"):
        body.pop(key, None)
    if job.request.body.get("min_tokens"):
        body["min_tokens"] = 1  # the first token must not be EOS either
    body.update(
        prompt=job.prompt_ids,
        max_tokens=1,
        stream=False,
        kv_transfer_params={
            "ret_first_tok": True,
            "disagg_spec": {
                "req_id": req_id,
                "receiver_host": decoder_host,
                "receiver_init_port": init_ports,
                "receiver_alloc_port": alloc_ports,
            },
            **tag,
        },
    )
    return body


def decode_body(job: HandoffJob, first_token: int, tag: dict[str, str]) -> dict[str, Any]:
    """The decode leg: the rest of the answer's budget, streamed (with usage when the client wants
    the whole answer, whose usage it reports), looking up the chunks under the handoff's tag."""
    body = sampling_fields(job.request, job.pool.model)
    body.update(
        prompt=[*job.prompt_ids, first_token],
        max_tokens=job.budget - 1,
        stream=True,
        kv_transfer_params=tag,
    )
    if not job.request.stream:
        body["stream_options"] = {"include_usage": True}
    min_tokens = job.request.body.get("min_tokens")
    if isinstance(min_tokens, int) and min_tokens > 0:
        body["min_tokens"] = min_tokens - 1
    return body


def first_token_of(answer: dict[str, Any], url: str) -> int:
    params = answer.get("kv_transfer_params")
    token = params.get("first_tok") if isinstance(params, dict) else None
    if isinstance(token, bool) or not isinstance(token, int):
        raise PrefillFailedError(url, "answer has no kv_transfer_params.first_tok", failure=Failure.ERROR)
    return token


class LmcacheConnector(Connector):
    pd_buffer = True  # the KV lands in the decoder's pd_buffer_size, in chunks
    notifies = True  # ProxyNotif from every prefiller rank that sends KV

    def __init__(
        self,
        upstream: Upstream,
        registry: EndpointRegistry,
        failed: Failed,
        hub: NotificationHub,
        drainer: HandoffDrainer,
        tags: TagLeases,
        *,
        timeout_s: float,
        stream_first_token: bool,
        on_wait: Callable[[str, float], None],
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(upstream, registry, failed)
        self.hub = hub
        self.drainer = drainer
        self.tags = tags
        self.timeout_s = timeout_s
        self.stream_first_token = stream_first_token
        self._on_wait = on_wait  # (pool, seconds) from the prefill answer to the last notification
        self._clock = clock

    @classmethod
    def build(cls, services: ConnectorServices) -> LmcacheConnector:
        return cls(
            services.upstream,
            services.registry,
            services.failed,
            services.hub,
            services.drainer,
            TagLeases(new_namespace()),
            timeout_s=services.handoff_timeout_s,
            stream_first_token=services.stream_first_token,
            on_wait=services.on_wait,
        )

    @staticmethod
    def notifications(attention: AttentionKind, prefill_tp: int) -> int:
        """One `ProxyNotif` per prefiller rank that sends KV."""
        return kv_sending_ranks(attention, prefill_tp)

    async def handoff(self, job: HandoffJob) -> Reply:
        """The handoff's resources (`LmcacheHandoff`) are closed in one of two places: here, when
        the answer is complete without a stream of the decode leg (or the handoff failed), or at
        the end of that stream (`_stream`), which then owns them."""
        handoff = LmcacheHandoff(job, self.hub, self.drainer, self.tags, self._clock)
        streamed = False
        try:
            reply, streamed = await self._run(handoff)
            return reply
        finally:
            if not streamed:
                handoff.close()

    async def _run(self, handoff: LmcacheHandoff) -> tuple[Reply, bool]:
        """The handoff's legs; and whether the reply is the stream that closes the handoff."""
        job = handoff.job
        request = job.request
        answer = await self._prefill(handoff)
        composer = AnswerComposer(
            request.kind, request.request_id, job.pool.model, len(job.prompt_ids), answer
        )
        assert handoff.first_token is not None
        if composer.ends_at_first_token:  # its KV went to the decoder all the same: drained in the background
            return self._prefill_only(request, composer), False
        body = msgspec.json.encode(decode_body(job, handoff.first_token, handoff.kv_tag))
        if request.stream and self.stream_first_token:
            stream = self._stream(handoff, composer, body)
            return Reply(200, stream=stream, content_type=SSE_CONTENT_TYPE), True
        await self._decode(handoff, body)
        if request.stream:
            stream = self._stream(handoff, composer, None)
            return Reply(200, stream=stream, content_type=SSE_CONTENT_TYPE), True
        decoded = await self._whole(handoff)
        return Reply(200, body=msgspec.json.encode(composer.whole(decoded))), False

    async def _prefill(self, handoff: LmcacheHandoff) -> dict[str, Any]:
        job = handoff.job
        handoff.prefill_sent()
        try:
            answer = await self.prefill(
                job,
                "/v1/completions",
                prefill_body(job, handoff.req_id, job.decode.address.host, handoff.kv_tag),
            )
        except EngineRejectedError:
            handoff.prefill_refused()
            raise
        handoff.prefilled()
        handoff.first_token = first_token_of(answer, job.prefill.url)
        return answer

    async def _decode(self, handoff: LmcacheHandoff, body: bytes) -> None:
        """Await the KV, then open the decode leg."""
        job = handoff.job
        started = time.monotonic()
        with job.trace.step(KV_WAIT):
            if not await handoff.arrivals.wait(self.timeout_s):
                raise HandoffTimeoutError(
                    handoff.req_id, handoff.arrivals.got, handoff.arrivals.want, url=job.prefill.url
                )
        self._on_wait(job.pool.name, time.monotonic() - started)
        with job.trace.leg(DECODE, job.decode.url):
            response = await self.upstream.open(
                job.decode.url, "/v1/completions", body, job.request.request_id, job.pool.engine_timeouts
            )
        handoff.decoding(response)

    def _prefill_only(self, request: ClientRequest, composer: AnswerComposer) -> Reply:
        if not request.stream:
            return Reply(200, body=msgspec.json.encode(composer.whole(None)))
        events = [event(composer.first_event())]
        if request.include_usage:
            events.append(event(composer.usage_event(None)))
        events.append(DONE)
        return Reply(200, stream=replay(events), content_type=SSE_CONTENT_TYPE)

    async def _stream(
        self, handoff: LmcacheHandoff, composer: AnswerComposer, body: bytes | None
    ) -> AsyncIterator[bytes]:
        """The client's stream. `body`: the decode leg still to send, when the first token goes out
        before the KV wait."""
        try:
            yield event(composer.first_event())
            if body is not None:
                try:
                    await self._decode(handoff, body)
                except RouterError as exc:
                    if isinstance(exc, BackendError):  # the prefiller's notifications, or the decoder
                        job = handoff.job
                        self.failed(job.prefill if isinstance(exc, HandoffTimeoutError) else job.decode, exc)
                    yield error_event(exc)
                    return
            async for chunk, payload in self._decoded(handoff):
                # An engine's error event passes through as it is.
                yield payload_event(payload) if "error" in chunk else event(composer.stream_event(chunk))
            yield DONE
        except BackendError as exc:
            yield error_event(exc)
        finally:
            handoff.close()

    async def _whole(self, handoff: LmcacheHandoff) -> dict[str, Any]:
        """The decode leg's stream folded into the completions answer it would have been."""
        text: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] | None = None
        async for chunk, _ in self._decoded(handoff):
            if "error" in chunk:
                detail = msgspec.json.encode(chunk["error"]).decode()[:200]
                raise BackendError(
                    f"Engine {handoff.job.decode.url} failed the decode: {detail}", code="engine_error"
                )
            choices = chunk.get("choices") or []
            if choices:
                text.append(choices[0].get("text") or "")
                finish = choices[0].get("finish_reason") or finish
            usage = chunk.get("usage") or usage
        return {"choices": [{"index": 0, "text": "".join(text), "finish_reason": finish}], "usage": usage}

    async def _decoded(self, handoff: LmcacheHandoff) -> AsyncIterator[tuple[dict[str, Any], bytes]]:
        """The decode leg's chunks (object, raw payload) up to its [DONE]; the first with a token
        marks the KV read. A break takes the decoder out and raises BackendError."""
        job, response = handoff.job, handoff.response
        assert response is not None
        parser = SseParser()
        try:
            async for chunk in response.iter_chunks():
                for payload in parser.feed(chunk):
                    if parser.is_done(payload):
                        response.release()
                        return
                    decoded = decode_object(payload, job.decode.url)
                    if decoded.get("choices"):
                        handoff.read()
                    yield decoded, payload
        except OSError as exc:  # EngineConnectionError, an engine fallen silent
            log.warning("decode stream from %s broke: %r", job.decode.url, exc)
            error = broken_off(job.decode.url, exc)
            self.failed(job.decode, error)
            raise error from exc
        except BackendError as exc:  # a garbled event
            self.failed(job.decode, exc)
            raise
        error = BackendError(  # the answer ended without its [DONE]
            f"Engine {job.decode.url} broke off the stream",
            code="engine_broke",
            url=job.decode.url,
            failure=Failure.BROKE,
        )
        self.failed(job.decode, error)
        raise error
