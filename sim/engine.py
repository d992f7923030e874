"""The engine: one asyncio loop drives the whole batch, step by step, as a GPU worker would.

Each iteration asks the :class:`~tandem.sim.core.EngineCore` for the step's work and its end
(``EngineTiming`` divided by ``--speed``), sleeps until then, then hands every sequence that sampled
its next token to its :class:`RequestStream`. Requests that arrive meanwhile wait for the next step,
so batching, queueing and preemption shape the latencies as they do in vLLM. Step deadlines are kept
on a running clock, so the loop's own CPU time is absorbed while it keeps up. The twin
(:mod:`tandem.sim.twin`) drives the same core on a virtual clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, NamedTuple

from tandem.sim.connector import EngineRequest, KVConnector
from tandem.sim.core import EngineCore, Sampled
from tandem.sim.generation import Anchor, Vocabulary, prefix_hashes, resume_point, token_at, word_at
from tandem.sim.metrics import SimMetrics
from tandem.sim.scheduler import Scheduler, Sequence, StepPlan
from tandem.sim.settings import SimSettings
from tandem.sim.stopping import FinishReason, OutputText
from tandem.sim.tokenizer import EOS, Tokenizer
from tandem.sim.tracing import NO_SPANS, FinishedRequest, RequestSpans

log = logging.getLogger(__name__)


class Delta(NamedTuple):
    """Text newly generated since the consumer last asked, and whether the request is done."""

    text: str
    finished: bool


class RequestStream:
    """The output side of one request, read by one consumer."""

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = 0
        self.num_generated = 0
        self.finish_reason: FinishReason | None = None
        self.stop_reason: str | int | None = None
        self.kv_transfer_params: dict[str, Any] | None = None
        self._pending: list[str] = []
        self._finished = False
        self._changed = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self._finished

    def push(self, text: str) -> None:
        self.num_generated += 1
        if text:
            self._pending.append(text)
            self._changed.set()

    def finish(
        self, reason: FinishReason, stop_reason: str | int | None, kv_transfer_params: dict[str, Any] | None
    ) -> None:
        self.finish_reason = reason
        self.stop_reason = stop_reason
        self.kv_transfer_params = kv_transfer_params
        self._finished = True
        self._changed.set()

    async def next(self) -> Delta:
        """Wait for new text or the finish; several tokens' text arrives at once when the reader lags."""
        while not self._pending and not self._finished:
            self._changed.clear()
            await self._changed.wait()
        text = "".join(self._pending)
        self._pending.clear()
        return Delta(text, self._finished)

    async def text(self) -> str:
        """The whole generated text, once finished."""
        parts = []
        while True:
            delta = await self.next()
            parts.append(delta.text)
            if delta.finished:
                return "".join(parts)


@dataclass(eq=False)
class _Running:
    request: EngineRequest
    seq: Sequence
    anchor: Anchor
    offset: int
    output: OutputText
    stream: RequestStream
    scheduled_at: float | None = None
    first_token_at: float | None = None


class Engine:
    def __init__(
        self,
        settings: SimSettings,
        tokenizer: Tokenizer,
        metrics: SimMetrics,
        connector: KVConnector,
        rank: int = 0,
        spans: RequestSpans = NO_SPANS,
    ) -> None:
        """`rank`: the engine's DP rank (tandem.sim.data_parallel runs several behind one server)."""
        self._settings = settings
        self._gauges = metrics.engine(rank)
        self._tokenizer = tokenizer
        self._vocabulary = Vocabulary(tokenizer)
        self._metrics = metrics
        self._connector = connector
        self._spans = spans
        self._core = EngineCore(
            settings.timing,
            block_size=settings.block_size,
            prefix_caching=settings.enable_prefix_caching,
            speed=settings.speed,
        )
        self._scheduler = self._core.scheduler
        self._requests: dict[str, _Running] = {}
        self._wake = asyncio.Event()

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    async def generate(self, request: EngineRequest) -> RequestStream:
        """Queue ``request`` (after any remote KV has been loaded); raises ``RequestError``."""
        self._connector.validate(request)
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        hashes = prefix_hashes(request.prompt, self._settings.seed)
        resume = resume_point(request.prompt, hashes, self._vocabulary)
        block = self._settings.block_size
        block_hashes = tuple(hashes[block::block])
        loaded = await self._connector.load(
            request,
            continuation=resume.offset > 0,
            cached_tokens=self._scheduler.cached_prefix_tokens(block_hashes, len(request.prompt)),
        )
        stream = RequestStream(len(request.prompt))
        if loaded.failed:  # vLLM finishes it with FINISHED_ERROR before it is ever scheduled
            self._metrics.request_success("error")
            stream.finish("error", None, None)
            return stream
        seq = Sequence(
            request.request_id, len(request.prompt), block_hashes, loaded.tokens, loaded.load_ms_per_token
        )
        self._requests[request.request_id] = _Running(
            request=request,
            seq=seq,
            anchor=resume.anchor.corrupted() if loaded.corrupt else resume.anchor,
            offset=resume.offset,
            output=OutputText(request.rules, self._tokenizer),
            stream=stream,
        )
        self._core.add(seq, arrival)
        self._wake.set()
        return stream

    def abort(self, request_id: str) -> None:
        running = self._requests.pop(request_id, None)
        if running is None:
            return
        self._connector.request_finished(running.request, "abort")
        self._scheduler.finish(running.seq)
        self._metrics.request_success("abort")
        running.stream.finish("abort", None, None)
        self._wake.set()

    def release(self, request_id: str) -> bool:
        """Free blocks held for a remote reader (see ``FinishedHandoff.hold_blocks``)."""
        released = self._scheduler.release(request_id)
        if released:
            self._wake.set()
            self._update_gauges()
        return released

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            step = self._core.begin(loop.time())
            self._account(step.plan, loop.time())
            if step.idle:
                self._update_gauges()
                if not step.plan.preempted:
                    self._wake.clear()
                    await self._wake.wait()
                continue
            await asyncio.sleep(step.end - loop.time())
            now = loop.time()
            await self._complete(self._core.end(step, now), now)
            self._update_gauges()

    async def close(self) -> None:
        for request_id in list(self._requests):
            self.abort(request_id)

    def _account(self, plan: StepPlan, now: float) -> None:
        metrics = self._metrics
        if plan.preempted:
            metrics.num_preemptions.inc(len(plan.preempted))
        if plan.prefix_query_tokens:
            metrics.prefix_cache_queries.inc(plan.prefix_query_tokens)
            metrics.prefix_cache_hits.inc(plan.prefix_hit_tokens)
        if plan.external_query_tokens and self._settings.kv_transfer_config is not None:
            metrics.external_prefix_cache_queries.inc(plan.external_query_tokens)
            metrics.external_prefix_cache_hits.inc(plan.external_hit_tokens)
        for seq in plan.admitted:
            running = self._requests[seq.request_id]
            if running.scheduled_at is None:
                running.scheduled_at = now
                running.stream.cached_tokens = seq.num_computed
                metrics.request_queue_time.observe(now - seq.arrival)

    async def _complete(self, sampled: list[Sampled], now: float) -> None:
        self._metrics.generation_tokens.inc(len(sampled))
        tokens = []
        stalls = []
        for event in sampled:
            running = self._requests[event.seq.request_id]
            token = self._token(running, event.seq.num_generated - 1)
            tokens.append((running, event, token))
            if event.first:
                stall = self._first_token(running, token, event.latency, now)
                if stall is not None:
                    stalls.append(stall)
        if stalls:
            # A connector's save blocks the forward pass: the whole engine waits, then answers.
            await asyncio.gather(*stalls)
        for running, event, token in tokens:
            if running.seq.finished:
                continue  # aborted while the engine stalled
            if not event.first:
                self._metrics.inter_token_latency.observe(event.latency)
            step = running.output.append(token)
            running.stream.push(step.text)
            if step.finish_reason is not None:
                self._finish(running, step.finish_reason, step.stop_reason, now)

    def _token(self, running: _Running, position: int) -> int:
        absolute = running.offset + position
        token = token_at(running.anchor, absolute, self._vocabulary)
        if token == EOS and position < running.request.rules.min_tokens:
            return word_at(running.anchor, absolute, self._vocabulary)  # EOS is masked below min_tokens
        return token

    def _first_token(
        self, running: _Running, token: int, ttft: float, now: float
    ) -> Awaitable[object] | None:
        metrics = self._metrics
        running.first_token_at = now
        metrics.prompt_tokens.inc(running.seq.prompt_len)
        metrics.time_to_first_token.observe(ttft)
        metrics.request_prefill_time.observe(now - (running.scheduled_at or running.seq.arrival))
        return self._connector.on_prefill_done(running.request, token)

    def _finish(
        self, running: _Running, reason: FinishReason, stop_reason: str | int | None, now: float
    ) -> None:
        handoff = self._connector.request_finished(running.request, reason)
        self._scheduler.finish(running.seq, hold=handoff.hold_blocks)
        del self._requests[running.request.request_id]
        self._metrics.request_success(reason)
        self._metrics.e2e_request_latency.observe(now - running.seq.arrival)
        running.stream.finish(reason, stop_reason, handoff.kv_transfer_params)
        self._spans.finished(self._figures(running, now), now)

    @staticmethod
    def _figures(running: _Running, now: float) -> FinishedRequest:
        arrival = running.seq.arrival
        scheduled = running.scheduled_at or arrival
        return FinishedRequest(
            running.request.request_id,
            running.request.trace_headers,
            arrival,
            scheduled,
            running.first_token_at or now,
            now,
            running.seq.prompt_len,
            running.stream.num_generated,
        )

    def _update_gauges(self) -> None:
        gauges = self._gauges
        gauges.num_requests_running.set(len(self._scheduler.running))
        gauges.num_requests_waiting.set(len(self._scheduler.waiting))
        gauges.kv_cache_usage_perc.set(self._scheduler.kv_usage)
