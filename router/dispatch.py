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

import msgspec

from tandem.api.spec import KvConnector
from tandem.router.admission import Need, Ticket
from tandem.router.budget import answer_budget, prompt_estimate, requested_tokens
from tandem.router.client_request import ClientRequest, Kind
from tandem.router.connectors import Connector, HandoffJob
from tandem.router.decision import (
    EndpointSnapshot,
    RequestFacts,
    Role,
    Route,
    RoutePlan,
    RoutingPolicy,
    estimate_prompt_tokens,
    needs_exact_count,
    plan_route,
    wants_disaggregation,
)
from tandem.router.decision.balance import BALANCE, Fact
from tandem.router.decision.recovery import Fail, GoDirect, next_step
from tandem.router.direct_route import forward
from tandem.router.endpoints import EndpointRegistry, EndpointState
from tandem.router.errors import (
    BackendError,
    BackendUnreachableError,
    HandoffTimeoutError,
    Ineligibility,
    NoEligibleEndpointError,
    PrefillFailedError,
    QueueFullError,
)
from tandem.router.meter import RequestMeter, failed
from tandem.router.metrics import RouterMetrics
from tandem.router.monitor import EndpointMonitor
from tandem.router.outlier import CLEAN, Phase
from tandem.router.pd_buffer import BufferShare
from tandem.router.pool import PoolConfig
from tandem.router.reply import Reply
from tandem.router.settings import RouterSettings
from tandem.router.sse import ends_with_error
from tandem.router.state import PoolRuntime, RouterState
from tandem.router.tracing import CLASSIFY, DECODE, NO_TRACE, RequestTrace
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
class HandoffInputs:
    """What a handoff of the request needs besides its pair of endpoints."""

    prompt_ids: list[int]
    budget: int  # tokens the answer may have
    buffer: BufferShare | None  # this replica's share of each decoder's PD buffer


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

    async def serve(
        self, pool: PoolRuntime, request: ClientRequest, hints: Hints, trace: RequestTrace = NO_TRACE
    ) -> Reply:
        """Serve the request on `pool`, the pool of its model (`RouterState.pool_for`)."""
        config = pool.config
        name, signals = config.name, pool.signals
        started = time.monotonic()
        signals.arrived()
        deadline = started + (hints.ttft_ms or config.slo.ttft_ms) / 1000
        gpu_s = self._gpu_seconds(pool, request) if Need.GPU_TIME in pool.admission.policy.needs else 0.0
        try:
            await pool.admission.acquire(Ticket(hints.priority, deadline, started, gpu_s))
        except QueueFullError:
            self.metrics.rejected.labels(name).inc()
            self.metrics.count(name, "none", "rejected")
            failed(signals.routes["none"], request.stream)
            trace.end("rejected")
            raise
        except asyncio.CancelledError:
            self._left_unanswered(pool, request, started)
            trace.end("cancelled")
            raise
        held = Holdings()
        held.add(pool.admission.release)
        route = "none"
        try:
            reply, plan, used, prompt_tokens = await self._route(pool, request, hints, held, trace)
            route = plan.route.value
        except BaseException as exc:
            held.release()
            outcome = _outcome(exc)
            self.metrics.count(name, route, outcome)
            if outcome == "cancelled":
                self._left_unanswered(pool, request, started)
            else:
                failed(signals.routes[route], request.stream)
            trace.end(outcome, route)
            raise
        meter = RequestMeter(signals.routes[route], config.slo, started, prompt_tokens)
        reply.headers["X-Request-Id"] = request.request_id
        if self.settings.route_headers:
            reply.headers["x-tandem-route"] = route
        if self.settings.route_headers and self.settings.debug:  # engine URLs: not for every client
            reply.headers["x-tandem-decode"] = plan.decode.url
            if plan.prefill is not None and plan.route is Route.PD:
                reply.headers["x-tandem-prefill"] = plan.prefill.url
        if reply.stream is None:
            held.release()
            ok = reply.status < 400
            if ok:
                self._succeeded(used)
            meter.answered(ok, reply.body)
            trace.end("ok" if ok else "error", route, meter)
            self.metrics.finished(name, route, "ok" if ok else "error", time.monotonic() - started)
            return reply
        reply.stream = self._measured(reply.stream, held, used, name, route, meter, trace)
        return reply

    @staticmethod
    def _gpu_seconds(pool: PoolRuntime, request: ClientRequest) -> float:
        """The request's predicted GPU time, from the cheap token estimate (admission comes before
        any /tokenize)."""
        return pool.config.gpu_time.seconds(
            prompt_estimate(request), requested_tokens(request), pool.max_model_len
        )

    @staticmethod
    def _left_unanswered(pool: PoolRuntime, request: ClientRequest, started: float) -> None:
        """The client left before any answer: a failure once it had waited past the TTFT target."""
        if (time.monotonic() - started) * 1000 >= pool.config.slo.ttft_ms:
            failed(pool.signals.routes["none"], request.stream)

    def _succeeded(self, used: tuple[EndpointState, ...]) -> None:
        for state in used:
            if state.outlier is not CLEAN:  # else there is nothing to reset
                self.monitor.succeeded(state)

    async def _measured(
        self,
        stream: AsyncIterator[bytes],
        held: Holdings,
        used: tuple[EndpointState, ...],
        pool: str,
        route: str,
        meter: RequestMeter,
        trace: RequestTrace,
    ) -> AsyncIterator[bytes]:
        outcome, previous, last = "cancelled", b"", b""
        clock = time.monotonic
        try:
            async for chunk in stream:
                meter.chunk(chunk, clock())
                previous, last = last, chunk
                yield chunk
            # A stream that broke ends with an error event (ours or the engine's).
            outcome = "error" if ends_with_error(previous + last) else "ok"
            if outcome == "ok":
                self._succeeded(used)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            held.release()
            now = clock()
            meter.streamed(outcome, previous + last, now)
            trace.end(outcome, route, meter)
            self.metrics.finished(pool, route, outcome, now - meter.started)

    async def _route(
        self, pool: PoolRuntime, request: ClientRequest, hints: Hints, held: Holdings, trace: RequestTrace
    ) -> tuple[Reply, RoutePlan, tuple[EndpointState, ...], int]:
        """Plan, execute, and after a failure before the first byte take the next step
        (`next_step`: go direct, retry elsewhere, or fail). Also the prompt's tokens, as the
        decision counted them."""
        config = pool.config
        connector = self.connectors[config.connector]
        with trace.step(CLASSIFY):
            # One config for the whole request: a reload between its awaits must not split it
            # (a PD plan made on the old threshold with no budget made on the new one).
            facts, ids = await self._facts(pool, config.routing, request, hints)
            facts, budget = await self._budget(pool, config.routing, request, facts, ids)
        share = self.state.buffer_share(config.name)
        inputs = HandoffInputs(ids, budget, share) if ids is not None and budget is not None else None
        exclude: set[str] = set()
        error: BackendError | None = None
        retries_left = self.settings.retries
        plan: RoutePlan | None = None
        while True:
            if plan is None:
                try:
                    plan = plan_route(
                        facts,
                        config.routing,
                        self.registry.snapshots(
                            config.name, Role.DECODE, share.capacity if share else None, config.decode_dp
                        ),
                        self.registry.snapshots(config.name, Role.PREFILL, engines=config.prefill_dp),
                        exclude=exclude,
                        turn=next(pool.turns),
                        rng=pool.rng,
                    )
                except NoEligibleEndpointError as exc:
                    if error is None:
                        raise
                    raise exc.after(error) from error  # name the failure that left nothing to try
            if plan.fallback is not None:
                self.metrics.fallbacks.labels(config.name, plan.fallback.value).inc()
            try:
                reply, used = await self._execute(pool, config, request, plan, connector, held, inputs, trace)
                return reply, plan, used, facts.prompt_tokens
            except BackendError as exc:
                error = exc
                step = next_step(exc, plan, config.routing.mode, retries_left)
            if isinstance(step, GoDirect):
                plan = step.plan
                continue
            if error.url is not None:
                attempt = self.settings.retries - retries_left + 1
                log.warning("request %s attempt %d failed: %s", request.request_id, attempt, error.message)
                self.metrics.retries.labels(config.name, _stage(error)).inc()
            if isinstance(step, Fail):
                raise error
            exclude.add(step.url)
            retries_left -= 1
            plan = None

    async def _execute(
        self,
        pool: PoolRuntime,
        config: PoolConfig,
        request: ClientRequest,
        plan: RoutePlan,
        connector: Connector,
        held: Holdings,
        inputs: HandoffInputs | None,
        trace: RequestTrace,
    ) -> tuple[Reply, tuple[EndpointState, ...]]:
        """The plan's engine calls, up to the answer's head (a stream's first bytes), and the
        endpoints that served it. A failure is reported to outlier detection here, and raised for
        the caller's next step."""
        attempt = Holdings()
        timeouts = config.engine_timeouts
        prefill: EndpointState | None = None
        try:
            decode = self._state_of(pool, plan.decode)
            attempt.add(self.registry.lease(decode).release)
            self._hold_trial(decode, attempt)
            if plan.route is Route.PD:
                assert plan.prefill is not None and inputs is not None  # a handoff has a budget
                prefill = self._state_of(pool, plan.prefill)  # leased by the connector, for the prefill
                self._hold_trial(prefill, attempt)
                job = HandoffJob(
                    request,
                    config,
                    decode,
                    prefill,
                    inputs.prompt_ids,
                    inputs.budget,
                    inputs.buffer,
                    trace,
                )
                reply = await connector.handoff(job)
                used: tuple[EndpointState, ...] = (decode, prefill)
            else:
                with trace.leg(DECODE, decode.url):
                    reply = await forward(self.upstream, decode, request, timeouts, self._broke(decode))
                used = (decode,)
        except BackendError as exc:
            failed = prefill if isinstance(exc, PrefillFailedError) else self._find(pool, exc.url)
            if failed is not None:
                self.monitor.failed(failed, exc)
            attempt.release()
            raise
        except BaseException:
            attempt.release()
            raise
        held.take(attempt)
        return reply, used

    def _hold_trial(self, state: EndpointState, holdings: Holdings) -> None:
        """An endpoint on trial takes this request only: until the request's end, or its outcome."""
        if state.outlier is not CLEAN and state.outlier.phase is Phase.TRIAL:
            holdings.add(self.monitor.hold_trial(state))

    def _broke(self, endpoint: EndpointState) -> Callable[[BackendError], None]:
        """Called when the endpoint's stream breaks or falls silent, after its first bytes."""
        return lambda error: self.monitor.failed(endpoint, error)

    def _state_of(self, pool: PoolRuntime, snapshot: EndpointSnapshot) -> EndpointState:
        state = self.registry.find(pool.config.name, snapshot.role, snapshot.url)
        if state is None:  # discovery dropped it between snapshot and now
            raise BackendUnreachableError(snapshot.url, "no longer discovered")
        return state

    def _find(self, pool: PoolRuntime, url: str | None) -> EndpointState | None:
        if url is None:
            return None
        return self.registry.find(pool.config.name, Role.DECODE, url) or self.registry.find(
            pool.config.name, Role.PREFILL, url
        )

    async def _facts(
        self, pool: PoolRuntime, policy: RoutingPolicy, request: ClientRequest, hints: Hints
    ) -> tuple[RequestFacts, list[int] | None]:
        needs = BALANCE[policy.balance].needs
        ids = request.prompt_ids
        splittable = request.splittable
        if ids is not None:
            count = len(ids)
        else:
            count = estimate_prompt_tokens(len(request.prompt_text))
            if splittable and needs_exact_count(count, policy):
                ids = await self._tokenize(pool, request)
                if ids is None:
                    splittable = False  # no exact count and no ids to hand off: serve it in one piece
                else:
                    count = len(ids)
        facts = RequestFacts(
            prompt_tokens=count,
            exact=ids is not None,
            splittable=splittable,
            session_key=(hints.session or request.user) if Fact.SESSION_KEY in needs else None,
            prefix_key=request.prefix_key() if Fact.PREFIX_KEY in needs else None,
        )
        return facts, ids

    async def _budget(
        self,
        pool: PoolRuntime,
        policy: RoutingPolicy,
        request: ClientRequest,
        facts: RequestFacts,
        ids: list[int] | None,
    ) -> tuple[RequestFacts, int | None]:
        """The answer's length budget, for a request that may become a handoff: its decode leg asks
        for exactly that, and what no engine would serve is refused (400) before any prefill. No
        budget (the context length unknown) or nothing left after the first token: no handoff."""
        if not wants_disaggregation(facts, policy):
            return facts, None
        if ids is not None and pool.max_model_len is None:
            await self._tokenize(pool, request, prompt="")  # learns the context length
        if ids is None or pool.max_model_len is None:
            return msgspec.structs.replace(facts, splittable=False), None
        budget = answer_budget(request, len(ids), pool.max_model_len)
        return (facts if budget > 1 else msgspec.structs.replace(facts, splittable=False)), budget

    async def _tokenize(
        self, pool: PoolRuntime, request: ClientRequest, prompt: str | None = None
    ) -> list[int] | None:
        """The engine's token ids for the prompt (chat template applied), or for `prompt`, from a
        decoder; its answer's `max_model_len` is recorded as the pool's context length."""
        decoders = [s for s in self.registry.states(pool.config.name, Role.DECODE) if s.healthy]
        if not decoders:
            raise NoEligibleEndpointError(Ineligibility.NO_DECODE)
        engine = min(decoders, key=lambda s: s.snapshot(None).load)
        payload: dict[str, object] = {"model": pool.config.model}
        if prompt is None and request.kind is Kind.CHAT:
            payload.update(messages=request.body["messages"], add_generation_prompt=True)
            if "chat_template_kwargs" in request.body:
                payload["chat_template_kwargs"] = request.body["chat_template_kwargs"]
        else:
            payload["prompt"] = request.prompt_text if prompt is None else prompt
        try:
            answer = await self.upstream.control(
                engine.url, "/tokenize", payload, request.request_id, pool.config.timeouts.connect_seconds
            )
        except BackendError as exc:
            log.warning("tokenize on %s failed (%s); routing on the estimate", engine.url, exc.message)
            self.monitor.failed(engine, exc)
            return None
        context = answer.get("max_model_len")
        if isinstance(context, int) and not isinstance(context, bool) and context > 0:
            pool.max_model_len = context
        tokens = answer.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            log.warning("tokenize on %s answered no token list; routing on the estimate", engine.url)
            return None
        return tokens


def _stage(error: BackendError) -> str:
    """Where a retried attempt failed: the `stage` of tandem_router_retries_total."""
    if isinstance(error, PrefillFailedError):
        return "prefill"
    if isinstance(error, HandoffTimeoutError):
        return "handoff"
    return error.failure.value if error.failure is not None else "error"


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, NoEligibleEndpointError):
        return "unavailable"
    return "error"
