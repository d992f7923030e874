"""One load run against an OpenAI-compatible server: what ``tandem load`` and the benchmarks call.

The steps: pick the model (``--model``, else the first ``/v1/models`` lists), measure the prompt
length per word with two probe requests (:mod:`tandem.load.prompts`; they also prove the server
answers before the clock starts), then dispatch the planned arrivals open-loop while a progress line
and, with a pool, a replica poller run beside them. Interrupting it (the ``stop`` event) ends the
run early with what was measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TextIO

import aiohttp

from tandem.load.client import Measured, error_message, stream_request
from tandem.load.clock import Clock, MonotonicClock
from tandem.load.endpoint import Endpoint
from tandem.load.lengths import Lengths
from tandem.load.openloop import Progress, run_open_loop
from tandem.load.progress import show_progress
from tandem.load.prompts import PROBE_WORDS, Calibration, prompt_text
from tandem.load.records import RequestRecord
from tandem.load.replicas import PoolReader, ReplicaSample, poll_replicas
from tandem.load.schedule import RateSchedule
from tandem.load.trace import TraceEntry
from tandem.load.workload import Arrival, bounded, replay, synthetic

_SETUP_TIMEOUT_S = 60.0  # for the model list and the probes


class LoadError(RuntimeError):
    """The run cannot start: the server does not answer, names no model, or rejects the probes."""


@dataclass(frozen=True)
class Traffic:
    """What arrives: a rate schedule with length distributions, or a trace."""

    schedule: RateSchedule | None = None
    prompts: Lengths | None = None
    outputs: Lengths | None = None
    burstiness: float = 1.0
    trace: Sequence[TraceEntry] | None = None
    trace_speed: float = 1.0

    def arrivals(self, seed: int) -> Iterator[Arrival]:
        if self.trace is not None:
            return replay(self.trace, self.trace_speed)
        if self.schedule is None or self.prompts is None or self.outputs is None:
            raise ValueError("synthetic traffic needs a schedule and both length distributions")
        return synthetic(self.schedule, self.prompts, self.outputs, seed, self.burstiness)


@dataclass(frozen=True)
class LoadSettings:
    url: str
    traffic: Traffic
    endpoint: Endpoint = Endpoint.COMPLETIONS
    model: str | None = None
    api_key: str | None = None
    duration_s: float | None = None
    max_requests: int | None = None
    seed: int = 0
    max_concurrency: int = 512
    timeout_s: float = 300.0
    ignore_eos: bool = True
    replicas_interval_s: float = 1.0


@dataclass(frozen=True)
class RunResult:
    model: str
    calibration: Calibration
    records: list[RequestRecord]
    replicas: list[ReplicaSample]
    interrupted: bool
    client_cpu_s: (
        float  # CPU time this process spent during the run: near its length, the client was the bottleneck
    )


def raise_file_limit(connections: int) -> None:
    """Let the process open ``connections`` sockets and some files (soft limit raised toward the hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(hard, wanted), hard)
        )


async def _get_json(session: aiohttp.ClientSession, method: str, url: str, what: str, **kwargs: Any) -> Any:
    """The JSON answer of a request the run needs before it starts; LoadError when there is none."""
    try:
        async with asyncio.timeout(_SETUP_TIMEOUT_S), session.request(method, url, **kwargs) as response:
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LoadError(f"cannot reach {url} for {what}: {exc!r}") from exc
    if response.status != HTTPStatus.OK:
        raise LoadError(f"{what} ({method} {url}) answered {response.status}: {error_message(body)}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise LoadError(f"{what} ({method} {url}) answered no JSON") from exc


async def first_model(session: aiohttp.ClientSession, url: str) -> str:
    models = await _get_json(session, "GET", f"{url}/v1/models", "the model list")
    try:
        return str(models["data"][0]["id"])
    except (KeyError, IndexError, TypeError) as exc:
        raise LoadError("GET /v1/models names no model: give --model") from exc


async def probe_prompt_tokens(
    session: aiohttp.ClientSession, url: str, endpoint: Endpoint, model: str, words: int, rng: random.Random
) -> int:
    """``usage.prompt_tokens`` of a one-token answer to a prompt of ``words`` words."""
    body = endpoint.body(model, prompt_text(words, rng), 1, ignore_eos=False, stream=False)
    answer = await _get_json(session, "POST", url + endpoint.path, "the probe request", json=body)
    try:
        return int(answer["usage"]["prompt_tokens"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LoadError(f"the probe's answer from {endpoint.path} has no usage.prompt_tokens") from exc


async def calibrate(
    session: aiohttp.ClientSession, url: str, endpoint: Endpoint, model: str, seed: int
) -> Calibration:
    rng = random.Random(f"{seed}:probes")
    counts = [await probe_prompt_tokens(session, url, endpoint, model, words, rng) for words in PROBE_WORDS]
    try:
        return Calibration.from_probes((counts[0], counts[1]))
    except ValueError as exc:
        raise LoadError(str(exc)) from exc


def http_session(settings: LoadSettings) -> aiohttp.ClientSession:
    """One connection per in-flight request, kept alive between requests."""
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    connector = aiohttp.TCPConnector(limit=settings.max_concurrency, limit_per_host=settings.max_concurrency)
    # No session-wide timeout: each request has its own (asyncio.timeout around it).
    return aiohttp.ClientSession(
        headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    )


async def execute(
    settings: LoadSettings,
    *,
    stop: asyncio.Event | None = None,
    pool: PoolReader | None = None,
    progress_out: TextIO | None = None,
    redraw: bool = False,
    clock: Clock | None = None,
) -> RunResult:
    """Run the load; ``pool``: sample its replicas meanwhile; ``progress_out``: show progress there."""
    stop = stop or asyncio.Event()
    raise_file_limit(settings.max_concurrency)
    async with http_session(settings) as session:
        model = settings.model or await first_model(session, settings.url)
        calibration = await calibrate(session, settings.url, settings.endpoint, model, settings.seed)
        text_rng = random.Random(f"{settings.seed}:text")

        def prepare(arrival: Arrival) -> dict[str, Any]:
            prompt = prompt_text(calibration.words_for(arrival.prompt_tokens), text_rng)
            return settings.endpoint.body(
                model, prompt, arrival.output_tokens, ignore_eos=settings.ignore_eos
            )

        run_clock = clock or MonotonicClock()

        async def send(body: dict[str, Any]) -> Measured:
            return await stream_request(
                session, settings.url, settings.endpoint, body, run_clock.now, settings.timeout_s
            )

        arrivals = bounded(
            settings.traffic.arrivals(settings.seed), settings.max_requests, settings.duration_s
        )
        progress = Progress()
        replicas: list[ReplicaSample] = []
        helpers = []
        if progress_out is not None:
            duration = settings.duration_s or (
                settings.traffic.schedule.duration_s if settings.traffic.schedule else None
            )
            total = settings.max_requests or (len(settings.traffic.trace) if settings.traffic.trace else None)
            helpers.append(
                asyncio.create_task(
                    show_progress(
                        progress,
                        run_clock,
                        progress_out,
                        duration if duration != float("inf") else None,
                        total,
                        interval_s=0.5 if redraw else 10.0,
                        redraw=redraw,
                    )
                )
            )
        if pool is not None:
            helpers.append(
                asyncio.create_task(poll_replicas(pool, run_clock, settings.replicas_interval_s, replicas))
            )
        cpu_start = time.process_time()
        try:
            records = await run_open_loop(
                arrivals, prepare, send, run_clock, settings.max_concurrency, stop=stop, progress=progress
            )
        finally:
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        cpu_s = time.process_time() - cpu_start
    return RunResult(model, calibration, records, replicas, interrupted=stop.is_set(), client_cpu_s=cpu_s)
