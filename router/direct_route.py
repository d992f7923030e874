"""The direct route: one engine serves the request; its answer passes through unchanged."""

from __future__ import annotations

from collections.abc import Callable

from tandem.router.client_request import ClientRequest
from tandem.router.endpoints import EndpointState
from tandem.router.engine_http import Timeouts
from tandem.router.errors import BackendError
from tandem.router.reply import SSE_CONTENT_TYPE, Reply
from tandem.router.upstream import Upstream, relay


async def forward(
    upstream: Upstream,
    endpoint: EndpointState,
    request: ClientRequest,
    timeouts: Timeouts,
    on_break: Callable[[BackendError], None],
    body: bytes | None = None,
) -> Reply:
    """Send `body` (default: the client's own bytes) to the endpoint on the client's path. A stream
    is answered once its first bytes are in: until then nothing has reached the client, so a
    failure is still the caller's to retry elsewhere."""
    resp = await upstream.open(
        endpoint.url, request.kind.path, request.raw if body is None else body, request.request_id, timeouts
    )
    if request.stream:
        first = await upstream.first(resp, endpoint.url)
        stream = relay(resp, endpoint.url, on_break, first)
        return Reply(resp.status, stream=stream, content_type=SSE_CONTENT_TYPE)
    return Reply(resp.status, body=await upstream.read(resp, endpoint.url))
