"""The connector interface, and the prefill leg both connectors share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from tandem.router.client_request import ClientRequest
from tandem.router.endpoints import EndpointRegistry, EndpointState
from tandem.router.errors import BackendError, BackendUnreachableError, PrefillFailedError
from tandem.router.pool import PoolConfig
from tandem.router.reply import Reply
from tandem.router.upstream import Upstream


@dataclass(frozen=True)
class HandoffJob:
    request: ClientRequest
    pool: PoolConfig
    decode: EndpointState
    prefill: EndpointState
    prompt_tokens: int
    prompt_ids: list[int] | None  # the engine's tokens, when the connector needs them


TakeOut = Callable[[EndpointState, str], None]


class Connector(ABC):
    needs_token_ids: ClassVar[bool]

    def __init__(self, upstream: Upstream, registry: EndpointRegistry, take_out: TakeOut) -> None:
        self.upstream = upstream
        self.registry = registry
        self.take_out = take_out  # an endpoint that broke a stream leaves rotation until healthy again

    @abstractmethod
    async def handoff(self, job: HandoffJob) -> Reply:
        """Serve the request as a prefill/decode pair. Raises PrefillFailedError when the prefill leg
        failed (the caller may prefill locally instead), HandoffTimeoutError, or the decode leg's errors."""

    async def prefill(self, job: HandoffJob, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.registry.lease(job.prefill):
            try:
                return await self.upstream.post_json(job.prefill.url, path, payload, job.request.request_id)
            except BackendError as exc:
                unreachable = isinstance(exc, BackendUnreachableError)
                raise PrefillFailedError(job.prefill.url, exc.message, unreachable=unreachable) from exc
