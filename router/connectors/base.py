"""The connector interface: a handoff, what a connector needs of its pools' configuration, how
the app builds one; and the prefill leg the connectors share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tandem.api.spec import AttentionKind
from tandem.router.client_request import ClientRequest
from tandem.router.endpoints import EndpointRegistry, EndpointState
from tandem.router.errors import BackendError, Failure, PrefillFailedError
from tandem.router.pd_buffer import BufferShare
from tandem.router.reply import Reply
from tandem.router.tracing import NO_TRACE, PREFILL, RequestTrace
from tandem.router.upstream import Upstream

if TYPE_CHECKING:  # pool.py asks the registry what a connector needs; handoff.py builds on HandoffJob
    from tandem.router.connectors.handoff import HandoffDrainer
    from tandem.router.connectors.notify import NotificationHub
    from tandem.router.pool import PoolConfig


@dataclass(frozen=True)
class HandoffJob:
    request: ClientRequest
    pool: PoolConfig
    decode: EndpointState
    prefill: EndpointState
    prompt_ids: list[int]  # the engine's tokens of the prompt (chat template applied)
    budget: int  # tokens the answer may have, as one engine would allow (budget.answer_budget)
    buffer: BufferShare | None = None  # this replica's share of the decoder's LMCache PD buffer
    trace: RequestTrace = NO_TRACE  # the request's spans: each leg opens its own


Failed = Callable[[EndpointState, BackendError], None]


@dataclass(frozen=True)
class ConnectorServices:
    """What the app's lifespan holds for the connectors; each takes what it uses."""

    upstream: Upstream
    registry: EndpointRegistry
    failed: Failed
    hub: NotificationHub
    drainer: HandoffDrainer
    handoff_timeout_s: float  # all of a handoff's KV notifications
    stream_first_token: bool
    on_wait: Callable[[str, float], None]  # (pool, seconds) from the prefill answer to the KV's arrival


class Connector(ABC):
    # What the connector needs of its pools' configuration (PoolConfig); by default nothing.
    # pd_buffer: a handoff takes room in the decoder's receive buffer, which the router admits against.
    pd_buffer: ClassVar[bool] = False
    # notifies: the pool's prefillers notify the router when the KV is in, so the router listens on
    # its notification port (RouterSettings.notify_listen_port) only for pools whose connector does.
    notifies: ClassVar[bool] = False

    def __init__(self, upstream: Upstream, registry: EndpointRegistry, failed: Failed) -> None:
        self.upstream = upstream
        self.registry = registry
        self.failed = failed  # reports a failure the caller cannot see (mid-stream) to outlier detection

    @classmethod
    @abstractmethod
    def build(cls, services: ConnectorServices) -> Connector:
        """The connector the app serves its pools with."""

    @staticmethod
    def notifications(attention: AttentionKind, prefill_tp: int) -> int:
        """Notifications the router awaits per handoff (PoolConfig.kv_notifications); 0: none."""
        return 0

    @abstractmethod
    async def handoff(self, job: HandoffJob) -> Reply:
        """Serve the request as a prefill/decode pair. Raises PrefillFailedError when the prefill leg
        failed (the caller may prefill locally instead), HandoffTimeoutError, or the decode leg's errors."""

    async def prefill(self, job: HandoffJob, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The prefill leg, within the pool's `prefillSeconds`."""
        with self.registry.lease(job.prefill), job.trace.step(PREFILL, job.prefill.url):
            try:
                return await self.upstream.post_json(
                    job.prefill.url, path, payload, job.request.request_id, job.pool.prefill_timeouts
                )
            except BackendError as exc:
                failure = exc.failure or Failure.ERROR
                raise PrefillFailedError(job.prefill.url, exc.message, failure=failure) from exc
