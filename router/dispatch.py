"""A completion request's way through the router: admission, decision, execution, retries.

Everything the request holds (its admission slot, endpoint leases) is released together when the
answer is complete: after the body for whole answers, at the end of the stream (or when the client
leaves) for streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from tandem.api.spec import BalancePolicy, DisaggregationMode, KvConnector
from tandem.router.admission import Ticket
from tandem.router.client_request import ClientRequest, Kind
from tandem.router.connectors import Connector, HandoffJob
from tandem.router.decision import (
    EndpointSnapshot,
    RequestFacts,
    Role,
    Route,
    RoutePlan,
    estimate_prompt_tokens,
    needs_exact_count,
    plan_route,
)
from tandem.router.endpoints import EndpointRegistry, EndpointState
from tandem.router.errors import (
    BackendError,
    BackendUnreachableError,
    HandoffTimeoutError,
    Ineligibility,
    NoEligibleEndpointError,
    PrefillFailedError,
    QueueFullError,
    RouterError,
)
from tandem.router.metrics import RouterMetrics
from tandem.router.monitor import EndpointMonitor
from tandem.router.proxy import forward
from tandem.router.reply import Reply
from tandem.router.settings import RouterSettings
from tandem.router.sse import ends_with_error
from tandem.router.state import PoolRuntime, RouterState
from tandem.router.upstream import Upstream

log = logging.getLogger(__name__)


class Holdings:
    """What a request holds, released last-in first-out. (An ExitStack costs more, on every request.)"""

    __slots__ = ("_releases",)

    def __init__(self) -> None:
        self._releases: list[Callable[[], None]] = []

    def add(self, release: Callable[[], None]) -> None:
        self._releases.append(release)

    def take(self, other: Holdings) -> None:
        self._releases.extend(other._releases)
        other._releases = []

    def release(self) -> None:
        while self._releases:
            self._releases.pop()()


@dataclass(frozen=True, slots=True)
class Hints:
    """What the client's headers say about the request."""

    session: str | None = None
    priority: int = 0
    ttft_ms: float | None = None


class Dispatcher:
    def __init__(
        self,
        settings: RouterSettings,
        state: RouterState,
        upstream: Upstream,
        connectors: dict[KvConnector, Connector],
        monitor: EndpointMonitor,
    ) -> None:
        self.settings = settings
        self.state = state
        self.registry: EndpointRegistry = state.registry
        self.metrics: RouterMetrics = state.metrics
        self.upstream = upstream
        self.connectors = connectors
        self.monitor = monitor

    async def serve(self, request: ClientRequest, hints: Hints) -> Reply:
        pool = self.state.pool_for(request.model)
        name = pool.config.name
        started = time.monotonic()
        deadline = started + (hints.ttft_ms or pool.config.ttft_ms) / 1000
        try:
            await pool.admission.acquire(Ticket(hints.priority, deadline))
        except QueueFullError:
            self.metrics.rejected.labels(name).inc()
            self.metrics.count(name, "none", "rejected")
            raise
        held = Holdings()
        held.add(pool.admission.release)
        route = "none"
        try:
            reply, plan = await self._route(pool, request, hints, held)
            route = plan.route.value
        except BaseException as exc:
            held.release()
            self.metrics.count(name, route, _outcome(exc))
            raise
        reply.headers["X-Request-Id"] = request.request_id
        if self.settings.route_headers:
            reply.headers["x-tandem-route"] = route
            reply.headers["x-tandem-decode"] = plan.decode.url
            if plan.prefill is not None and plan.route is Route.PD:
                reply.headers["x-tandem-prefill"] = plan.prefill.url
        if reply.stream is None:
            held.release()
            self.metrics.finished(
                name, route, "ok" if reply.status < 400 else "error", time.monotonic() - started
            )
            return reply
        reply.stream = self._measured(reply.stream, held, name, route, started)
        return reply

    async def _measured(
        self, stream: AsyncIterator[bytes], held: Holdings, pool: str, route: str, started: float
    ) -> AsyncIterator[bytes]:
        outcome, first, last = "cancelled", True, b""
        try:
            async for chunk in stream:
                if first:
                    self.metrics.ttft.labels(pool, route).observe(time.monotonic() - started)
                    first = False
                last = chunk
                yield chunk
            # A stream that broke ends with an error event (ours or the engine's).
            outcome = "error" if ends_with_error(last) else "ok"
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            held.release()
            self.metrics.finished(pool, route, outcome, time.monotonic() - started)

    async def _route(
        self, pool: PoolRuntime, request: ClientRequest, hints: Hints, held: Holdings
    ) -> tuple[Reply, RoutePlan]:
        config = pool.config
        connector = self.connectors[config.connector]
        facts, ids = await self._facts(pool, request, hints, connector.needs_token_ids)
        exclude: set[str] = set()
        error: RouterError | None = None
        for attempt in range(self.settings.retries + 1):
            plan = plan_route(
                facts,
                config.routing,
                self.registry.snapshots(config.name, Role.DECODE, config.decoder_buffer_chunks),
                self.registry.snapshots(config.name, Role.PREFILL),
                exclude=exclude,
                turn=next(pool.turns),
                rng=pool.rng,
            )
            if plan.fallback is not None:
                self.metrics.fallbacks.labels(config.name, plan.fallback.value).inc()
            try:
                return await self._execute(pool, request, plan, facts, ids, connector, held)
            except (PrefillFailedError, HandoffTimeoutError) as exc:
                assert plan.prefill is not None
                error, stage = exc, "prefill" if isinstance(exc, PrefillFailedError) else "handoff"
                exclude.add(plan.prefill.url)
            except BackendUnreachableError as exc:
                error, stage = exc, "connect"
                exclude.add(exc.url)
            log.warning("request %s attempt %d failed: %s", request.request_id, attempt + 1, error.message)
            self.metrics.retries.labels(config.name, stage).inc()
        assert error is not None
        raise error

    async def _execute(
        self,
        pool: PoolRuntime,
        request: ClientRequest,
        plan: RoutePlan,
        facts: RequestFacts,
        ids: list[int] | None,
        connector: Connector,
        held: Holdings,
    ) -> tuple[Reply, RoutePlan]:
        attempt = Holdings()
        try:
            decode = self._state_of(pool, plan.decode)
            attempt.add(self.registry.lease(decode).release)
            if plan.route is Route.PD:
                assert plan.prefill is not None
                job = HandoffJob(
                    request, pool.config, decode, self._state_of(pool, plan.prefill), facts.prompt_tokens, ids
                )
                try:
                    reply = await connector.handoff(job)
                except PrefillFailedError as exc:
                    if exc.unreachable:
                        self.monitor.take_out(job.prefill, exc.message)
                    if pool.config.routing.mode == DisaggregationMode.ALWAYS:
                        raise
                    self.metrics.fallbacks.labels(pool.config.name, Ineligibility.PREFILL_FAILED.value).inc()
                    plan = RoutePlan(Route.DIRECT, plan.decode, fallback=Ineligibility.PREFILL_FAILED)
                    reply = await forward(self.upstream, decode, request, self._broke(decode))
            else:
                reply = await forward(self.upstream, decode, request, self._broke(decode))
        except BackendUnreachableError as exc:
            if (state := self._find(pool, exc.url)) is not None:
                self.monitor.take_out(state, exc.message)
            attempt.release()
            raise
        except BaseException:
            attempt.release()
            raise
        held.take(attempt)
        return reply, plan

    def _broke(self, endpoint: EndpointState) -> Callable[[RouterError], None]:
        """Called when the endpoint's stream breaks: out until it answers /health again."""
        return lambda error: self.monitor.take_out(endpoint, error.message)

    def _state_of(self, pool: PoolRuntime, snapshot: EndpointSnapshot) -> EndpointState:
        state = self.registry.find(pool.config.name, snapshot.role, snapshot.url)
        if state is None:  # discovery dropped it between snapshot and now
            raise BackendUnreachableError(snapshot.url, "no longer discovered")
        return state

    def _find(self, pool: PoolRuntime, url: str) -> EndpointState | None:
        return self.registry.find(pool.config.name, Role.DECODE, url) or self.registry.find(
            pool.config.name, Role.PREFILL, url
        )

    async def _facts(
        self, pool: PoolRuntime, request: ClientRequest, hints: Hints, needs_ids: bool
    ) -> tuple[RequestFacts, list[int] | None]:
        policy = pool.config.routing
        ids = request.prompt_ids
        splittable = request.splittable
        if ids is not None:
            count = len(ids)
        else:
            count = estimate_prompt_tokens(len(request.prompt_text))
            if splittable and needs_exact_count(count, policy, connector_needs_ids=needs_ids):
                ids = await self._tokenize(pool, request)
                if ids is None:
                    splittable = False  # no exact count and no ids to hand off: serve it in one piece
                else:
                    count = len(ids)
        facts = RequestFacts(
            prompt_tokens=count,
            exact=ids is not None,
            splittable=splittable,
            session_key=hints.session or request.user,
            prefix_key=request.prefix_key() if policy.balance == BalancePolicy.PREFIX else None,
        )
        return facts, ids

    async def _tokenize(self, pool: PoolRuntime, request: ClientRequest) -> list[int] | None:
        """The engine's token ids for the prompt (chat template applied), from a decoder."""
        decoders = [s for s in self.registry.states(pool.config.name, Role.DECODE) if s.healthy]
        if not decoders:
            raise NoEligibleEndpointError(Ineligibility.NO_DECODE)
        engine = min(decoders, key=lambda s: s.snapshot(None).load)
        payload: dict[str, object] = {"model": pool.config.model}
        if request.kind is Kind.CHAT:
            payload.update(messages=request.body["messages"], add_generation_prompt=True)
            if "chat_template_kwargs" in request.body:
                payload["chat_template_kwargs"] = request.body["chat_template_kwargs"]
        else:
            payload["prompt"] = request.prompt_text
        try:
            answer = await self.upstream.control(engine.url, "/tokenize", payload, request.request_id)
        except BackendError as exc:
            log.warning("tokenize on %s failed (%s); routing on the estimate", engine.url, exc.message)
            if isinstance(exc, BackendUnreachableError):
                self.monitor.take_out(engine, exc.message)
            return None
        tokens = answer.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            log.warning("tokenize on %s answered no token list; routing on the estimate", engine.url)
            return None
        return tokens


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, NoEligibleEndpointError):
        return "unavailable"
    return "error"
