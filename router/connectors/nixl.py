"""vLLM NIXL handoff: relay `kv_transfer_params` from the prefill answer to the decode request.

Prefill leg: the client's request on the same path with `max_tokens: 1`, no streaming, and
`kv_transfer_params: {do_remote_decode: true, ...}`. Its answer carries the parameters the decoder
needs to pull the KV (block ids, engine id, host, port). vLLM 0.33 returns them whatever ended the
prefill, EOS and stop strings included (it holds the blocks until their lease expires:
vllm/distributed/kv_transfer/kv_connector/v1/nixl/pull_scheduler.py, ``request_finished``:
FINISHED_LENGTH_CAPPED and FINISHED_STOPPED both delay the free), so the
answer's ``finish_reason`` decides: "length" means the one-token cap stopped it and a decode leg
follows; anything else (EOS, a stop string) means that answer is the whole answer. Decode leg:
the client's request plus those parameters, `remote_host` set to the prefiller's pod IP (an
engine reports its own idea of its address, which need not be reachable), and the answer's length
budget made explicit (`max_tokens`; chat: `max_completion_tokens`, which vLLM reads first).

The handoff's wait, for streams: the prefill answer to the decode leg's first bytes. The decoder
pulls the KV before it schedules the request's first step, so this is the transfer plus one step
(LMCache's counterpart is the wait for the notifications). A whole answer's first bytes are all of
it: no wait is measured for those.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from tandem.router.client_request import ClientRequest, Kind
from tandem.router.compose import answer_as_events
from tandem.router.connectors.base import Connector, ConnectorServices, HandoffJob
from tandem.router.direct_route import forward
from tandem.router.reply import SSE_CONTENT_TYPE, Reply
from tandem.router.sse import DONE, event, replay
from tandem.router.tracing import DECODE

REMOTE_DECODE = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


def prefill_body(body: dict[str, Any]) -> dict[str, Any]:
    leg = {k: v for k, v in body.items() if k not in ("stream_options", "min_tokens")}
    leg.update(max_tokens=1, max_completion_tokens=1, stream=False, kv_transfer_params=REMOTE_DECODE)
    return leg


def decode_body(
    request: ClientRequest, params: dict[str, Any], remote_host: str, budget: int
) -> dict[str, Any]:
    field = "max_completion_tokens" if request.kind is Kind.CHAT else "max_tokens"
    return {**request.body, field: budget, "kv_transfer_params": {**params, "remote_host": remote_host}}


class NixlConnector(Connector):
    def __init__(self, services: ConnectorServices, on_wait: Callable[[str, float], None]) -> None:
        super().__init__(services.upstream, services.registry, services.failed)
        self._on_wait = on_wait

    @classmethod
    def build(cls, services: ConnectorServices) -> NixlConnector:
        return cls(services, services.on_wait)

    async def handoff(self, job: HandoffJob) -> Reply:
        request = job.request
        answer = await self.prefill(job, request.kind.path, prefill_body(request.body))
        params = answer.get("kv_transfer_params")
        if not isinstance(params, dict) or _finish_reason(answer) != "length":
            return _whole_answer(answer, request.stream, request.include_usage, request.kind)
        decode = decode_body(request, params, job.prefill.address.host, job.budget)
        on_break = lambda error: self.failed(job.decode, error)  # noqa: E731
        body = msgspec.json.encode(decode)
        started = time.monotonic()
        timeouts = job.pool.engine_timeouts
        with job.trace.leg(DECODE, job.decode.url):
            reply = await forward(self.upstream, job.decode, request, timeouts, on_break, body)
        if request.stream:
            self._on_wait(job.pool.name, time.monotonic() - started)
        return reply


def _finish_reason(answer: dict[str, Any]) -> object:
    choices = answer.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0].get("finish_reason")
    return None


def _whole_answer(answer: dict[str, Any], stream: bool, include_usage: bool, kind: Kind) -> Reply:
    if not stream:
        return Reply(200, body=msgspec.json.encode(answer))
    events = [event(e) for e in answer_as_events(answer, kind, include_usage=include_usage)] + [DONE]
    return Reply(200, stream=replay(events), content_type=SSE_CONTENT_TYPE)
