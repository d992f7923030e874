"""The engine: one asyncio loop drives the whole batch, step by step, as a GPU worker would.

Each iteration asks the :class:`~tandem.sim.scheduler.Scheduler` for the step's work, sleeps for
the step's modelled duration (``EngineTiming`` divided by ``--speed``), then hands every sequence
that sampled its next token to its :class:`RequestStream`. Requests that arrive meanwhile wait for
the next step, so batching, queueing and preemption shape the latencies as they do in vLLM. Step
deadlines are kept on a running clock, so the loop's own CPU time is absorbed while it keeps up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from tandem.sim.connector import EngineRequest, FinishedHandoff, KVConnector
from tandem.sim.generation import Anchor, Vocabulary, prefix_hashes, resume_point, token_at, word_at
from tandem.sim.metrics import SimMetrics
from tandem.sim.scheduler import Scheduler, Sequence, StepPlan, step_ms
from tandem.sim.settings import SimSettings
from tandem.sim.stopping import FinishReason, OutputText
from tandem.sim.tokenizer import EOS, Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delta:
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
    arrival: float
    scheduled_at: float | None = None
    last_token_at: float = 0.0
    handoff: Awaitable[object] | None = field(default=None, repr=False)


class Engine:
    def __init__(
        self, settings: SimSettings, tokenizer: Tokenizer, metrics: SimMetrics, connector: KVConnector
    ) -> None:
        self._settings = settings
        self._tokenizer = tokenizer
        self._vocabulary = Vocabulary(tokenizer)
        self._metrics = metrics
        self._connector = connector
        self._scheduler = Scheduler(settings.timing, settings.block_size, settings.enable_prefix_caching)
        self._requests: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._clock = 0.0
        self._background: set[asyncio.Task[None]] = set()

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
        loaded = await self._connector.load(request, continuation=resume.offset > 0)
        block = self._settings.block_size
        seq = Sequence(request.request_id, len(request.prompt), tuple(hashes[block::block]), loaded.tokens)
        stream = RequestStream(len(request.prompt))
        self._requests[request.request_id] = _Running(
            request=request,
            seq=seq,
            anchor=resume.anchor.corrupted() if loaded.corrupt else resume.anchor,
            offset=resume.offset,
            output=OutputText(request.rules, self._tokenizer),
            stream=stream,
            arrival=arrival,
        )
        self._scheduler.add(seq)
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
        self._clock = loop.time()
        while True:
            plan = self._scheduler.schedule()
            self._account(plan, loop.time())
            if not plan.chunks:
                self._update_gauges()
                if not plan.preempted:
                    self._wake.clear()
                    await self._wake.wait()
                    self._clock = loop.time()
                continue
            # The step ends one step duration after the previous one ended: the loop's own work
            # since then is hidden in it, as a GPU step hides the scheduler's CPU time. A loop that
            # falls behind starts from now rather than owing time (no burst of short steps).
            now = loop.time()
            self._clock = max(
                self._clock + step_ms(plan, self._settings.timing) / 1000 / self._settings.speed, now
            )
            await asyncio.sleep(self._clock - now)
            self._complete(plan, loop.time())
            self._update_gauges()

    async def close(self) -> None:
        for request_id in list(self._requests):
            self.abort(request_id)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _account(self, plan: StepPlan, now: float) -> None:
        metrics = self._metrics
        if plan.preempted:
            metrics.num_preemptions.inc(len(plan.preempted))
        if plan.prefix_query_tokens:
            metrics.prefix_cache_queries.inc(plan.prefix_query_tokens)
            metrics.prefix_cache_hits.inc(plan.prefix_hit_tokens)
        for seq in plan.admitted:
            running = self._requests[seq.request_id]
            if running.scheduled_at is None:
                running.scheduled_at = now
                running.stream.cached_tokens = seq.num_computed
                metrics.request_queue_time.observe(now - running.arrival)

    def _complete(self, plan: StepPlan, now: float) -> None:
        sampled = self._scheduler.complete(plan)
        self._metrics.generation_tokens.inc(len(sampled))
        for seq in sampled:
            running = self._requests[seq.request_id]
            position = seq.num_generated
            token = self._token(running, position)
            seq.num_generated += 1
            step = running.output.append(token)
            if position == 0:
                self._first_token(running, token, now)
            else:
                self._metrics.inter_token_latency.observe(now - running.last_token_at)
            running.last_token_at = now
            running.stream.push(step.text)
            if step.finish_reason is not None:
                self._finish(running, step.finish_reason, step.stop_reason, now)

    def _token(self, running: _Running, position: int) -> int:
        absolute = running.offset + position
        token = token_at(running.anchor, absolute, self._vocabulary)
        if token == EOS and position < running.request.rules.min_tokens:
            return word_at(running.anchor, absolute, self._vocabulary)  # EOS is masked below min_tokens
        return token

    def _first_token(self, running: _Running, token: int, now: float) -> None:
        metrics = self._metrics
        metrics.prompt_tokens.inc(running.seq.prompt_len)
        metrics.time_to_first_token.observe(now - running.arrival)
        metrics.request_prefill_time.observe(now - (running.scheduled_at or running.arrival))
        running.handoff = self._connector.on_prefill_done(running.request, token)

    def _finish(
        self, running: _Running, reason: FinishReason, stop_reason: str | int | None, now: float
    ) -> None:
        request_id = running.request.request_id
        handoff = self._connector.request_finished(running.request, reason)
        self._scheduler.finish(running.seq, hold=handoff.hold_blocks)
        del self._requests[request_id]
        self._metrics.request_success(reason)
        self._metrics.e2e_request_latency.observe(now - running.arrival)
        if running.handoff is None:
            running.stream.finish(reason, stop_reason, handoff.kv_transfer_params)
            return
        task = asyncio.create_task(self._finish_after(running.handoff, running, reason, stop_reason, handoff))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish_after(
        self,
        settled: Awaitable[object],
        running: _Running,
        reason: FinishReason,
        stop_reason: str | int | None,
        handoff: FinishedHandoff,
    ) -> None:
        await settled
        running.stream.finish(reason, stop_reason, handoff.kv_transfer_params)

    def _update_gauges(self) -> None:
        metrics = self._metrics
        metrics.num_requests_running.set(len(self._scheduler.running))
        metrics.num_requests_waiting.set(len(self._scheduler.waiting))
        metrics.kv_cache_usage_perc.set(self._scheduler.kv_usage)
