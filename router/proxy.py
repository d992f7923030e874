"""The direct route: one engine serves the request; its answer passes through unchanged."""

from __future__ import annotations

from collections.abc import Callable

from tandem.router.client_request import ClientRequest
from tandem.router.endpoints import EndpointState
from tandem.router.errors import RouterError
from tandem.router.reply import SSE_CONTENT_TYPE, Reply
from tandem.router.upstream import Upstream, relay


async def forward(
    upstream: Upstream,
    endpoint: EndpointState,
    request: ClientRequest,
    on_break: Callable[[RouterError], None],
    body: bytes | None = None,
) -> Reply:
    """Send `body` (default: the client's own bytes) to the endpoint on the client's path."""
    resp = await upstream.open(
        endpoint.url, request.kind.path, request.raw if body is None else body, request.request_id
    )
    if request.stream:
        return Reply(resp.status, stream=relay(resp, endpoint.url, on_break), content_type=SSE_CONTENT_TYPE)
    return Reply(resp.status, body=await upstream.read(resp, endpoint.url))
