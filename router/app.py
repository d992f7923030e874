"""The router's ASGI application: routes, the request id, API keys, and the lifespan that owns
every piece of state (no module globals: two apps in one process do not share anything)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import msgspec
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST

from tandem.api.tracing import ROUTER_SERVICE, tracer_provider
from tandem.router import client_hints
from tandem.router.asgi import (
    ANSWERED_BY_SERVER,
    ON_DISCONNECT,
    ClientDisconnectedError,
    Receive,
    Scope,
    Send,
    error_reply,
    header,
    read_body,
    send_reply,
    until_disconnect,
)
from tandem.router.auth import ANONYMOUS, ApiKeys, Caller, load_api_keys
from tandem.router.budget import estimated_tokens
from tandem.router.client_request import Kind, parse_client_request
from tandem.router.connectors import (
    ConnectorServices,
    HandoffDrainer,
    NotificationHub,
    build_connectors,
)
from tandem.router.discovery.static import publish_static
from tandem.router.dispatch import Dispatcher, Hints
from tandem.router.endpoints import EndpointRegistry
from tandem.router.engine_http import EngineClient
from tandem.router.errors import (
    MethodNotAllowedError,
    NotFoundError,
    NotServingError,
    RouterError,
)
from tandem.router.metrics import RouterMetrics
from tandem.router.monitor import EndpointMonitor
from tandem.router.reply import Reply
from tandem.router.settings import RouterSettings
from tandem.router.state import RouterState
from tandem.router.tracing import NO_TRACING, OtelTracing, Tracer
from tandem.router.upstream import Upstream, new_session

log = logging.getLogger(__name__)

# A client's X-Request-Id is passed to engines and logs: printable, bounded.
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/=+-]{1,128}$")
GC_YOUNG_THRESHOLD = 50_000


@dataclass
class Services:
    """What the lifespan builds and the routes use."""

    settings: RouterSettings
    state: RouterState
    dispatcher: Dispatcher
    metrics: RouterMetrics
    api_keys: ApiKeys | None
    tracer: Tracer


Handler = Callable[[Services, Scope, Receive, str], Awaitable[Reply]]


class _RequestIds:
    """Fresh request ids: 128 random bits from the OS, in hex. Drawn 256 at a time: a getrandom()
    system call per request showed in the data path's profile."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool, self._at = b"", 0

    def new(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(16 * 256), 0
        self._at += 16
        return self._pool[self._at - 16 : self._at].hex()


class RouterApp:
    def __init__(self, settings: RouterSettings, *, spans: TracerProvider | None = None) -> None:
        """`spans`: where request spans go (its owner shuts it down); by default a provider of
        the router's own when `settings.otlp_traces_endpoint` is set, else no tracing."""
        self.settings = settings
        self._spans = spans
        self.services: Services | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the serving loop, once the lifespan runs
        self._request_ids = _RequestIds()
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): _completions(Kind.CHAT),
            ("POST", "/v1/completions"): _completions(Kind.COMPLETION),
            ("GET", "/v1/models"): _models,
            ("GET", "/health"): _health,
            ("GET", "/ready"): _ready,
            ("GET", "/metrics"): _metrics,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            loop = self._loop or asyncio.get_running_loop()
            given = header(scope, b"x-request-id")
            request_id = given.decode() if given and _REQUEST_ID.match(given) else self._request_ids.new()
            left = await until_disconnect(
                lambda body: self._http(scope, body, send, request_id),
                receive,
                loop,
                # Taken out of the scope: the hook is a method of the server's cycle, which holds
                # the scope, and a reference cycle per request is work for the cycle collector.
                scope.pop(ON_DISCONNECT, None),
            )
            if left and ANSWERED_BY_SERVER not in scope:
                log.info("request %s: the client disconnected before the answer was complete", request_id)

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        handler = self._routes.get((scope["method"], scope["path"]))
        try:
            if self.services is None:
                raise NotServingError("The router is starting or stopping.", code="not_serving")
            if handler is None:
                raise _not_found(scope, self._routes)
            reply = await handler(self.services, scope, receive, request_id)
        except RouterError as exc:
            reply = error_reply(exc, request_id)
        except ClientDisconnectedError:
            raise
        except Exception:  # a bug: still an OpenAI-style answer, and the traceback in the log
            log.exception("request %s failed", request_id)
            failure = RouterError("The router failed on this request.", code="internal_error")
            reply = error_reply(failure, request_id)
        await send_reply(send, reply)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        async with AsyncExitStack() as stack:
            try:
                self.services = await self._start(stack)
            except Exception as exc:
                log.exception("router failed to start")
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            self._loop = asyncio.get_running_loop()
            _settle_collector()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            self.services = None
            self._loop = None
        await send({"type": "lifespan.shutdown.complete"})

    async def _start(self, stack: AsyncExitStack) -> Services:
        settings = self.settings
        api_keys = ApiKeys(load_api_keys(settings.api_keys_file)) if settings.api_keys_file else None
        metrics = RouterMetrics(per_endpoint=settings.debug)
        registry = EndpointRegistry()
        state = RouterState(
            registry,
            metrics,
            max_inflight_per_decode=settings.max_inflight_per_decode,
            retry_after_s=settings.retry_after_s,
            handoff_timeout_s=settings.handoff_timeout_s,
        )
        metrics.track(registry, state.queue_depths, state.buffer_report)
        session = new_session()
        stack.push_async_callback(session.close)
        engines = EngineClient()
        stack.push_async_callback(engines.close)
        upstream = Upstream(engines, control_timeout_s=settings.control_timeout_s)
        monitor = EndpointMonitor(
            registry,
            session,
            metrics,
            scrape_interval_s=settings.scrape_interval_s,
            ejection=settings.ejection(),
            timeout_s=settings.control_timeout_s,
        )
        hub = NotificationHub(
            settings.replica_id(),
            settings.listen_host(),
            settings.notify_listen_port() or 0,
            state.is_peer,
            lambda disposition: metrics.notifications.labels(disposition).inc(),
            on_disconnect=metrics.notify_disconnects.inc,
        )
        stack.push_async_callback(hub.close)
        if settings.notify_listen_port() is not None:
            hub.start()
        else:
            log.info("no KV-notification port: no pool of this router has a connector that notifies")
        drainer = HandoffDrainer(
            upstream,
            registry,
            kv_timeout_s=settings.handoff_timeout_s,
            drain_timeout_s=settings.handoff_drain_timeout_s,
            on_outcome=lambda pool, outcome: metrics.handoff_endings.labels(pool, outcome).inc(),
        )
        stack.push_async_callback(drainer.close)
        connectors = build_connectors(
            ConnectorServices(
                upstream,
                registry,
                monitor.failed,
                hub,
                drainer,
                handoff_timeout_s=settings.handoff_timeout_s,
                stream_first_token=settings.stream_first_token,
                on_wait=lambda pool, seconds: metrics.handoff_wait.labels(pool).observe(seconds),
            )
        )
        dispatcher = Dispatcher(settings, state, upstream, connectors, monitor)
        if settings.static is not None:
            publish_static(settings.static, settings, state)
        else:
            from tandem.router.discovery.kubernetes import KubernetesDiscovery, api_client

            assert settings.kubernetes is not None
            api = await api_client(settings.kubernetes)
            stack.push_async_callback(api.close)
            await stack.enter_async_context(
                _background(KubernetesDiscovery(api, settings, state).run(), "discovery")
            )
        await stack.enter_async_context(_background(monitor.run(), "endpoint monitor"))
        return Services(settings, state, dispatcher, metrics, api_keys, self._tracer(stack))

    def _tracer(self, stack: AsyncExitStack) -> Tracer:
        """Decided once: spans for every request, or none at all."""
        spans, endpoint = self._spans, self.settings.otlp_traces_endpoint
        if spans is None and endpoint is not None:
            spans = tracer_provider(ROUTER_SERVICE, endpoint, os.environ)
            stack.callback(spans.shutdown)  # flushes the spans still batched
        return NO_TRACING if spans is None else OtelTracing(spans, debug=self.settings.debug)


@contextlib.asynccontextmanager
async def _background(work: Awaitable[None], name: str) -> AsyncIterator[None]:
    async def guarded() -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped", name)

    task = asyncio.create_task(guarded(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _settle_collector() -> None:
    """Tune the cyclic garbage collector for the data path, where it took 10-15% of the router's
    CPU: what exists after startup lives as long as the app, so full collections stop walking it
    (freeze); and young collections, which walk every object of every request in flight, run once
    per GC_YOUNG_THRESHOLD allocations instead of 700 (a few MB of cyclic garbage at most)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def create_app(settings: RouterSettings, *, spans: TracerProvider | None = None) -> RouterApp:
    return RouterApp(settings, spans=spans)


def _json(payload: object, status: int = 200) -> Reply:
    return Reply(status, body=msgspec.json.encode(payload))


def _not_found(scope: Scope, routes: dict[tuple[str, str], Handler]) -> RouterError:
    if any(path == scope["path"] for _, path in routes):
        return MethodNotAllowedError(
            f"Method {scope['method']} not allowed on {scope['path']}.", code="method_not_allowed"
        )
    return NotFoundError(f"No route {scope['path']}.", code="not_found")


def _authorize(services: Services, scope: Scope) -> Caller:
    if services.api_keys is None:
        return ANONYMOUS
    return services.api_keys.check(header(scope, b"authorization"))


def _hints(settings: RouterSettings, scope: Scope, *, trusted: bool) -> Hints:
    """What the client's headers say; the admission ones only from a trusted client."""
    given = header(scope, settings.session_header.lower().encode())
    session = given.decode(errors="replace") if given else None
    if not trusted:
        return Hints(session=session)
    priority = header(scope, settings.priority_header.lower().encode())
    ttft_ms = header(scope, settings.deadline_header.lower().encode())
    return Hints(
        session=session,
        priority=client_hints.priority(priority, settings.priority_header),
        ttft_ms=client_hints.ttft_ms(ttft_ms, settings.deadline_header),
    )


def _completions(kind: Kind) -> Handler:
    async def handle(services: Services, scope: Scope, receive: Receive, request_id: str) -> Reply:
        settings = services.settings
        caller = _authorize(services, scope)
        raw = await read_body(scope, receive, settings.max_body_bytes)
        request = parse_client_request(kind, raw, request_id)
        if caller.budget is not None:
            caller.budget.charge(estimated_tokens(request))
        pool = services.state.pool_for(request.model)
        trusted = caller.may_set_priority or pool.config.trust_client_priority
        hints = _hints(settings, scope, trusted=trusted)
        return await services.dispatcher.serve(
            pool, request, hints, services.tracer.request(scope, pool.config)
        )

    return handle


async def _models(services: Services, scope: Scope, receive: Receive, request_id: str) -> Reply:
    _authorize(services, scope)
    created = int(time.time())
    data = [
        {
            "id": p.config.model,
            "object": "model",
            "created": created,
            "owned_by": "tandem",
            "root": p.config.model,
        }
        for p in services.state.pools.values()
    ]
    return _json({"object": "list", "data": data})


async def _health(services: Services, scope: Scope, receive: Receive, request_id: str) -> Reply:
    return Reply(200)


async def _ready(services: Services, scope: Scope, receive: Receive, request_id: str) -> Reply:
    reasons = services.state.not_ready()
    return _json({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)


async def _metrics(services: Services, scope: Scope, receive: Receive, request_id: str) -> Reply:
    return Reply(200, body=services.metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
