"""The simulator's ASGI app: vLLM's OpenAI server surface, plus ``/admin/faults``.

``create_app(settings)`` builds it; the lifespan owns everything stateful (engine loop, connector
sockets, metrics registry, faults) and keeps it in ``app.state.sim`` while it runs, so an app can
be driven in-process (``httpx.ASGITransport``, see :mod:`tandem.sim.testing`) or served by uvicorn
(``tandem sim``).

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /health``, ``POST /tokenize``, ``POST /detokenize``, ``GET /metrics``, ``GET /version``,
``GET|POST /admin/faults`` and ``GET /admin/pd_buffer`` (unless ``admin_api`` is off).

A request the engine finished with ``finish_reason`` "error" (a failed KV load) is answered as
vLLM 0.33 answers a ``GenerationError`` (``entrypoints/generate/base/serving.py`` 200-207): 500
``InternalServerError``, or in a stream an error event followed by ``[DONE]``
(``entrypoints/openai/completion/serving.py`` 552-556).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tandem.api.tracing import tracer_provider
from tandem.sim.connector import EngineRequest, KVConnector, RequestError
from tandem.sim.data_parallel import DataParallelEngines
from tandem.sim.engine import Engine, RequestStream
from tandem.sim.event_stream import DropConnectionError, EventStream, until_client_leaves
from tandem.sim.faults import Faults, FaultState
from tandem.sim.kv_connectors import build_connector
from tandem.sim.metrics import SimMetrics
from tandem.sim.openai_protocol import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    bad_request,
    check_token_ids,
    max_new_tokens,
    stop_rules,
)
from tandem.sim.openai_responses import (
    DONE,
    ChunkWriter,
    Kind,
    json_bytes,
    models_body,
    response_body,
    sse,
    usage,
)
from tandem.sim.settings import SimSettings
from tandem.sim.tokenizer import Tokenizer, default_tokenizer
from tandem.sim.tracing import NO_SPANS, OtelSpans, RequestSpans, trace_headers

log = logging.getLogger(__name__)
VERSION = "0.1.0+tandem.sim"
_Body = TypeVar("_Body", bound=BaseModel)
_GENERATION_ERROR = "Internal server error"  # vLLM's GenerationError message


@dataclass
class Sim:
    """What the routes share; built by the lifespan."""

    settings: SimSettings
    tokenizer: Tokenizer
    metrics: SimMetrics
    faults: FaultState
    connector: KVConnector
    engine: DataParallelEngines
    engine_loop: asyncio.Task[None]
    started: int
    ids: itertools.count[int]

    @property
    def healthy(self) -> bool:
        """False when faults say so, or when the engine loop died (vLLM's EngineDeadError)."""
        return not self.faults.faults.unhealthy and not self.engine_loop.done()

    def model_name(self, requested: str | None) -> str:
        names = self.settings.model_names
        if requested is not None and requested not in names:
            raise ApiError(404, f"The model `{requested}` does not exist.", "model")
        return requested or names[0]


def _sim(request: Request) -> Sim:
    sim: Sim = request.app.state.sim
    return sim


async def _parse(request: Request, model: type[_Body]) -> _Body:
    try:
        return model.model_validate(json.loads(await request.body()))
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        raise bad_request(exc) from exc


async def _enforce_faults(sim: Sim, request: Request) -> None:
    faults = sim.faults
    if faults.draw_failure():
        sim.metrics.faults_injected.labels(fault="error").inc()
        raise ApiError(faults.faults.error_status, "injected fault: the request failed")
    if faults.faults.delay_ms or faults.faults.hang:
        sim.metrics.faults_injected.labels(fault="delay" if not faults.faults.hang else "hang").inc()
        await until_client_leaves(request.receive, faults.hold(), lambda: None)


async def _chunks(
    sim: Sim, stream: RequestStream, writer: ChunkWriter, include_usage: bool
) -> AsyncIterator[bytes]:
    opening = writer.opening()
    if opening is not None:
        yield opening
    while True:
        delta = await stream.next()
        if delta.finished:
            assert stream.finish_reason is not None
            if stream.finish_reason == "error":
                yield sse(ApiError(500, _GENERATION_ERROR).body())
                yield DONE
                return
            yield writer.final(delta.text, stream.finish_reason, stream.stop_reason)
            break
        if delta.text:
            yield writer.text(delta.text)
    if include_usage:
        yield writer.usage(_usage(sim, stream))
    yield DONE


async def _faulty(sim: Sim, faults: Faults, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Trickle chunks, drop the connection or exit the process after so many chunks (``faults``:
    those set when the stream began)."""
    sent = 0
    async for chunk in chunks:
        if faults.trickle_ms > 0:
            if sent == 0:
                sim.metrics.faults_injected.labels(fault="trickle").inc()
            await asyncio.sleep(faults.trickle_ms / 1000)
        if sent == faults.exit_after_chunks:
            log.error("injected fault: exiting after %d chunks", sent)
            os._exit(1)
        if sent == faults.close_after_chunks:
            sim.metrics.faults_injected.labels(fault="close").inc()
            raise DropConnectionError
        yield chunk
        sent += 1


def _usage(sim: Sim, stream: RequestStream) -> dict[str, Any]:
    cached = stream.cached_tokens if sim.settings.prompt_tokens_details else None
    return usage(stream.prompt_tokens, stream.num_generated, cached)


async def _generate(request: Request, kind: Kind) -> ASGIApp:
    sim = _sim(request)
    if not sim.healthy:
        if sim.faults.faults.unhealthy:
            sim.metrics.faults_injected.labels(fault="unhealthy").inc()
        raise ApiError(503, "the engine is unhealthy")
    body: CompletionRequest | ChatCompletionRequest = await _parse(
        request, CompletionRequest if kind == "completion" else ChatCompletionRequest
    )
    body.check_unsupported()
    model = sim.model_name(body.model)
    prompt = body.prompt_ids(sim.tokenizer)
    max_tokens = max_new_tokens(body.requested_max_tokens(), len(prompt), sim.settings.max_model_len)
    await _enforce_faults(sim, request)
    base_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    response_id = f"{'cmpl' if kind == 'completion' else 'chatcmpl'}-{base_id}"
    engine_request = EngineRequest(
        f"{response_id}-{next(sim.ids)}",
        prompt,
        stop_rules(body, max_tokens),
        body.kv_transfer_params,
        trace_headers(request.headers),
    )
    try:
        stream = await sim.engine.generate(engine_request)
    except RequestError as exc:
        raise ApiError(400, str(exc), "kv_transfer_params") from exc

    def abort() -> None:
        sim.engine.abort(engine_request.request_id)

    created = int(time.time())
    if body.stream:
        writer = ChunkWriter(kind, response_id=response_id, created=created, model=model)
        chunks = _chunks(sim, stream, writer, body.include_usage)
        faults = sim.faults.faults
        # A stream without faults skips their wrapper: one generator less per token.
        return EventStream(_faulty(sim, faults, chunks) if faults.shapes_streams else chunks, abort)
    text = await until_client_leaves(request.receive, stream.text(), abort)
    assert stream.finish_reason is not None
    if stream.finish_reason == "error":
        raise ApiError(500, _GENERATION_ERROR)
    payload = response_body(
        kind,
        response_id=response_id,
        created=created,
        model=model,
        text=text,
        finish_reason=stream.finish_reason,
        stop_reason=stream.stop_reason,
        usage_block=_usage(sim, stream),
        kv_transfer_params=stream.kv_transfer_params,
    )
    return Response(json_bytes(payload), media_type="application/json")


async def completions(request: Request) -> ASGIApp:
    return await _generate(request, "completion")


async def chat_completions(request: Request) -> ASGIApp:
    return await _generate(request, "chat")


async def tokenize(request: Request) -> Response:
    sim = _sim(request)
    body = await _parse(request, TokenizeRequest)
    sim.model_name(body.model)
    tokens = body.prompt_ids(sim.tokenizer)
    strs = [sim.tokenizer.piece(t) for t in tokens] if body.return_token_strs else None
    payload = {
        "count": len(tokens),
        "max_model_len": sim.settings.max_model_len,
        "tokens": tokens,
        "token_strs": strs,
    }
    return Response(json_bytes(payload), media_type="application/json")


async def detokenize(request: Request) -> Response:
    sim = _sim(request)
    body = await _parse(request, DetokenizeRequest)
    sim.model_name(body.model)
    tokens = check_token_ids(body.tokens, sim.tokenizer, "tokens")
    return Response(json_bytes({"prompt": sim.tokenizer.decode(tokens)}), media_type="application/json")


async def models(request: Request) -> Response:
    sim = _sim(request)
    settings = sim.settings
    body = models_body(settings.model_names, settings.model, settings.max_model_len, sim.started)
    return Response(json_bytes(body), media_type="application/json")


async def health(request: Request) -> Response:
    return Response(status_code=200 if _sim(request).healthy else 503)


async def metrics(request: Request) -> Response:
    return Response(_sim(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def version(request: Request) -> Response:
    return Response(json_bytes({"version": VERSION}), media_type="application/json")


async def faults(request: Request) -> Response:
    state = _sim(request).faults
    if request.method == "POST":
        state.set(await _parse(request, Faults))
        log.warning("faults now %s", state.current().model_dump(exclude_defaults=True))
    return Response(json_bytes(state.current().model_dump()), media_type="application/json")


async def pd_buffer(request: Request) -> Response:
    state = _sim(request).connector.buffer_state()
    if state is None:
        raise ApiError(404, "this engine has no LMCache PD receive buffer (it is not a kv_consumer)")
    return Response(json_bytes(state), media_type="application/json")


def _report_engine_death(loop: asyncio.Task[None]) -> None:
    if not loop.cancelled() and loop.exception() is not None:
        log.error("the engine loop died: the engine is unhealthy", exc_info=loop.exception())


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return Response(json_bytes(exc.body()), status_code=exc.status, media_type="application/json")


def _spans(settings: SimSettings) -> tuple[RequestSpans, Callable[[], None]]:
    """vLLM's request spans when an OTLP endpoint is set, and how to stop them (flushing)."""
    if settings.otlp_traces_endpoint is None:
        return NO_SPANS, lambda: None
    provider = tracer_provider("tandem-sim", settings.otlp_traces_endpoint, os.environ)
    return OtelSpans(provider), provider.shutdown


def create_app(settings: SimSettings) -> Starlette:
    """The ASGI app of one simulated engine."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tokenizer = default_tokenizer()
        sim_metrics = SimMetrics(settings.model_names[0], settings.model)
        fault_state = FaultState(settings.faults, settings.seed)
        connector = build_connector(settings, sim_metrics, fault_state)
        spans, stop_spans = _spans(settings)
        engine = DataParallelEngines(
            [
                Engine(settings, tokenizer, sim_metrics, connector, rank, spans)
                for rank in range(settings.data_parallel_size)
            ]
        )
        await connector.start(engine)
        loop = asyncio.create_task(engine.run(), name="engine-loop")
        loop.add_done_callback(_report_engine_death)
        sim = Sim(
            settings,
            tokenizer,
            sim_metrics,
            fault_state,
            connector,
            engine,
            loop,
            int(time.time()),
            itertools.count(),
        )
        app.state.sim = sim
        try:
            yield
        finally:
            del app.state.sim
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await engine.close()
            await connector.stop()
            stop_spans()

    routes = [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
    ]
    if settings.admin_api:
        routes.append(Route("/admin/faults", faults, methods=["GET", "POST"]))
        routes.append(Route("/admin/pd_buffer", pd_buffer, methods=["GET"]))
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={ApiError: _api_error})
