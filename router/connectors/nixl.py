"""vLLM NIXL handoff: relay `kv_transfer_params` from the prefill answer to the decode request.

Prefill leg: the client's request on the same path with `max_tokens: 1`, no streaming, and
`kv_transfer_params: {do_remote_decode: true, ...}`. Its answer carries the parameters the decoder
needs to pull the KV (block ids, engine id, host, port) — only when prefill stopped on the length
cap; if its one token ended the answer (EOS, stop), that answer is the whole answer. Decode leg:
the client's request plus those parameters, `remote_host` set to the prefiller's pod IP (an
engine reports its own idea of its address, which need not be reachable).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from tandem.router.client_request import Kind
from tandem.router.compose import answer_as_events
from tandem.router.connectors.base import Connector, HandoffJob
from tandem.router.proxy import forward
from tandem.router.reply import SSE_CONTENT_TYPE, Reply
from tandem.router.sse import DONE, event, replay

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


class NixlConnector(Connector):
    needs_token_ids: ClassVar[bool] = False

    async def handoff(self, job: HandoffJob) -> Reply:
        request = job.request
        answer = await self.prefill(job, request.kind.path, prefill_body(request.body))
        params = answer.get("kv_transfer_params")
        if not isinstance(params, dict):
            return _whole_answer(answer, request.stream, request.include_usage, request.kind)
        decode = {**request.body, "kv_transfer_params": {**params, "remote_host": job.prefill.address.host}}
        on_break = lambda error: self.take_out(job.decode, error.message)  # noqa: E731
        return await forward(self.upstream, job.decode, request, on_break, msgspec.json.encode(decode))


def _whole_answer(answer: dict[str, Any], stream: bool, include_usage: bool, kind: Kind) -> Reply:
    if not stream:
        return Reply(200, body=msgspec.json.encode(answer))
    events = [event(e) for e in answer_as_events(answer, kind, include_usage=include_usage)] + [DONE]
    return Reply(200, stream=replay(events), content_type=SSE_CONTENT_TYPE)
