"""LMCache PD handoff: prefill with the decoder named in `disagg_spec`, await the KV, then decode.

1. The prompt's token ids (the router tokenized it: the decode leg sends ids, not text).
2. Prefill: `/v1/completions` (for chat too) with `max_tokens: 1` and `kv_transfer_params:
   {ret_first_tok, disagg_spec{req_id, receiver_host, receiver_init_port[], receiver_alloc_port[]}}`;
   the answer's `kv_transfer_params.first_tok` is the first token.
3. One `ProxyNotif` per decoder TP rank says the KV is in the decoder's buffer. The prefill answer
   does not: a decode sent before the notifications would recompute or read half-written chunks,
   so the decode never goes early; a timeout fails the handoff (the caller may retry elsewhere).
4. Decode: `prompt: ids + [first_tok]`, `max_tokens - 1`, on the decoder chosen in step 2; the
   answer is composed for the client (first token in front, chat chunks for chat).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import msgspec

from tandem.router.client_request import ClientRequest
from tandem.router.compose import AnswerComposer
from tandem.router.connectors.base import Connector, HandoffJob, TakeOut
from tandem.router.connectors.notify import Arrivals, NotificationHub
from tandem.router.endpoints import EndpointRegistry
from tandem.router.engine_client import EngineResponse
from tandem.router.errors import (
    BackendError,
    BackendUnreachableError,
    HandoffTimeoutError,
    PrefillFailedError,
    RouterError,
)
from tandem.router.reply import SSE_CONTENT_TYPE, Reply
from tandem.router.sse import DONE, SseParser, error_event, event, payload_event, replay
from tandem.router.upstream import Upstream, decode_object

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


def prefill_body(job: HandoffJob, req_id: str, ids: list[int], decoder_host: str) -> dict[str, Any]:
    init_ports, alloc_ports = job.pool.receiver_ports()
    body = sampling_fields(job.request, job.pool.model)
    for key in ("stream_options", "min_tokens"):
        body.pop(key, None)
    if job.request.body.get("min_tokens"):
        body["min_tokens"] = 1  # the first token must not be EOS either
    body.update(
        prompt=ids,
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
        },
    )
    return body


def decode_body(job: HandoffJob, ids: list[int], first_token: int) -> dict[str, Any]:
    body = sampling_fields(job.request, job.pool.model)
    body.update(prompt=[*ids, first_token], stream=job.request.stream)
    if job.request.max_tokens is not None:
        body["max_tokens"] = job.request.max_tokens - 1
    min_tokens = job.request.body.get("min_tokens")
    if isinstance(min_tokens, int) and min_tokens > 0:
        body["min_tokens"] = min_tokens - 1
    return body


def first_token_of(answer: dict[str, Any], url: str) -> int:
    params = answer.get("kv_transfer_params")
    token = params.get("first_tok") if isinstance(params, dict) else None
    if isinstance(token, bool) or not isinstance(token, int):
        raise PrefillFailedError(url, "answer has no kv_transfer_params.first_tok", unreachable=False)
    return token


class LmcacheConnector(Connector):
    needs_token_ids: ClassVar[bool] = True

    def __init__(
        self,
        upstream: Upstream,
        registry: EndpointRegistry,
        take_out: TakeOut,
        hub: NotificationHub,
        *,
        timeout_s: float,
        stream_first_token: bool,
        on_wait: Callable[[str, float], None],
    ) -> None:
        super().__init__(upstream, registry, take_out)
        self.hub = hub
        self.timeout_s = timeout_s
        self.stream_first_token = stream_first_token
        self._on_wait = on_wait  # (pool, seconds) from the prefill answer to the last notification

    async def handoff(self, job: HandoffJob) -> Reply:
        if job.prompt_ids is None:
            raise ValueError("the LMCache connector needs the prompt's token ids")
        ids = job.prompt_ids
        req_id = self.hub.new_req_id()
        hold = self.registry.hold_buffer(job.decode, job.pool.routing.pd_chunks(len(ids)))
        arrivals = self.hub.expect(req_id, job.pool.decode_tp)
        try:
            answer = await self.prefill(
                job, "/v1/completions", prefill_body(job, req_id, ids, job.decode.address.host)
            )
            first = first_token_of(answer, job.prefill.url)
            composer = AnswerComposer(
                job.request.kind, job.request.request_id, job.pool.model, len(ids), answer
            )
            if composer.ends_at_first_token:
                self.hub.discard(req_id)
                hold.release()
                return self._prefill_only(job.request, composer)
            body = msgspec.json.encode(decode_body(job, ids, first))
            if job.request.stream and self.stream_first_token:
                stream = self._stream(job, composer, body, req_id, arrivals, hold.release)
                return Reply(200, stream=stream, content_type=SSE_CONTENT_TYPE)
            await self._await_kv(job, req_id, arrivals)
            resp = await self.upstream.open(job.decode.url, "/v1/completions", body, job.request.request_id)
        except BaseException:
            self.hub.discard(req_id)
            hold.release()
            raise
        self.hub.discard(req_id)
        if job.request.stream:
            stream = self._stream(job, composer, resp, req_id, arrivals, hold.release)
            return Reply(200, stream=stream, content_type=SSE_CONTENT_TYPE)
        hold.release()
        decoded = decode_object(await self.upstream.read(resp, job.decode.url), job.decode.url)
        return Reply(200, body=msgspec.json.encode(composer.whole(decoded)))

    async def _await_kv(self, job: HandoffJob, req_id: str, arrivals: Arrivals) -> None:
        started = time.monotonic()
        if not await arrivals.wait(self.timeout_s):
            raise HandoffTimeoutError(req_id, arrivals.got, arrivals.want)
        self._on_wait(job.pool.name, time.monotonic() - started)

    def _prefill_only(self, request: ClientRequest, composer: AnswerComposer) -> Reply:
        if not request.stream:
            return Reply(200, body=msgspec.json.encode(composer.whole(None)))
        events = [event(composer.first_event())]
        if request.include_usage:
            events.append(event(composer.usage_event(None)))
        events.append(DONE)
        return Reply(200, stream=replay(events), content_type=SSE_CONTENT_TYPE)

    async def _stream(
        self,
        job: HandoffJob,
        composer: AnswerComposer,
        decode: EngineResponse | bytes,
        req_id: str,
        arrivals: Arrivals,
        release_buffer: Callable[[], None],
    ) -> AsyncIterator[bytes]:
        """`decode` is the opened decode answer, or the decode body when the first token goes
        out before the KV wait."""
        resp: EngineResponse | None = None
        try:
            yield event(composer.first_event())
            if isinstance(decode, bytes):  # first token sent early: now the wait, then the decode
                try:
                    await self._await_kv(job, req_id, arrivals)
                    resp = await self.upstream.open(
                        job.decode.url, "/v1/completions", decode, job.request.request_id
                    )
                except RouterError as exc:
                    if isinstance(exc, BackendUnreachableError):
                        self.take_out(job.decode, exc.message)
                    yield error_event(exc)
                    return
                finally:
                    self.hub.discard(req_id)
            else:
                resp = decode
            async for chunk in self._converted(resp, job, composer, release_buffer):
                yield chunk
        finally:
            release_buffer()
            if resp is not None:
                resp.close()

    async def _converted(
        self,
        resp: EngineResponse,
        job: HandoffJob,
        composer: AnswerComposer,
        release: Callable[[], None],
    ) -> AsyncIterator[bytes]:
        parser = SseParser()
        try:
            async for chunk in resp.iter_chunks():
                release()  # the decoder is generating: it has read the KV out of its buffer
                for payload in parser.feed(chunk):
                    if parser.is_done(payload):
                        yield DONE
                        return
                    chunk_object = decode_object(payload, job.decode.url)
                    # An engine's error event passes through as it is.
                    yield (
                        payload_event(payload)
                        if "error" in chunk_object
                        else event(composer.stream_event(chunk_object))
                    )
        except (OSError, BackendError) as exc:  # EngineConnectionError, timeouts
            log.warning("decode stream from %s broke: %r", job.decode.url, exc)
            error = BackendError(f"Engine {job.decode.url} broke off the stream", code="engine_broke")
            self.take_out(job.decode, error.message)
            yield error_event(error)
