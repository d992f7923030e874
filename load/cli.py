"""``tandem load``: open-loop traffic against an OpenAI-compatible server, measured as vLLM measures it.

Without ``--pool`` the traffic and targets default to an InferencePool's (``WorkloadSpec()``,
``SloSpec()``); with it, to that pool's ``workload`` and ``slo``, and the URL to its router. Exit
status: 0 when the run went through (whatever the server answered), 1 when it could not start,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import uvloop

from tandem.api import InferencePool, SloSpec, WorkloadSpec
from tandem.load.endpoint import Endpoint
from tandem.load.lengths import LengthError, Lengths, from_token_stats, parse_lengths
from tandem.load.replicas import PoolError
from tandem.load.report import summary_json, summary_text
from tandem.load.run import LoadError, LoadSettings, RunResult, Traffic, execute
from tandem.load.schedule import RateSchedule, ScheduleError, parse_duration
from tandem.load.stats import DEFAULT_PERCENTILES, ItlStatistic, summarize, window_width, windows
from tandem.load.trace import TraceError, parse_trace

if TYPE_CHECKING:
    from tandem.load.kube import KubernetesPool

log = logging.getLogger("tandem.load")
_DEFAULT_DURATION_S = 60.0
_T = TypeVar("_T")


def _parsed(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    def wrapped(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{text} must be a positive number")
        return value

    return _parsed(parse)


def _duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text} must be a positive duration")
    return seconds


def _percentiles(text: str) -> tuple[float, ...]:
    values = tuple(float(p) for p in text.split(",") if p.strip())
    if not values or any(not 0 < p < 100 for p in values):
        raise ValueError(f"{text!r}: give percentiles between 0 and 100, e.g. 50,90,99")
    return values


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "load",
        help="drive an OpenAI-compatible server with open-loop traffic and measure it",
        description="Open-loop load (Poisson arrivals on a rate schedule, or a trace) with TTFT, ITL and "
        "SLO attainment measured as `vllm bench serve` does. See docs/load.md.",
    )
    parser.add_argument(
        "url", nargs="?", help="base URL, e.g. http://127.0.0.1:8000 (default: the pool's router)"
    )
    traffic = parser.add_argument_group(
        "traffic (default: the pool's workload, else an InferencePool's default)"
    )
    arrivals = traffic.add_mutually_exclusive_group()
    arrivals.add_argument("--rate", type=_positive(float), help="requests per second, held constant")
    arrivals.add_argument(
        "--schedule", type=_parsed(RateSchedule.parse), help="steps and ramps, e.g. 2:30s,2-10:1m,10:30s"
    )
    arrivals.add_argument(
        "--trace", type=Path, help='JSONL of {"t": s, "prompt_tokens": n, "output_tokens": m}'
    )
    traffic.add_argument(
        "--trace-speed", type=_positive(float), help="replay the trace this many times faster"
    )
    traffic.add_argument(
        "--burstiness",
        type=_positive(float),
        help="gamma shape of the gaps: 1 Poisson (default), <1 burstier",
    )
    traffic.add_argument(
        "--prompt-tokens", type=_parsed(parse_lengths), help="N, mean=N[,p90=M] or uniform=A-B"
    )
    traffic.add_argument(
        "--output-tokens", type=_parsed(parse_lengths), help="N, mean=N[,p90=M] or uniform=A-B"
    )
    bounds = parser.add_argument_group("bounds")
    bounds.add_argument(
        "--duration",
        type=_parsed(_duration),
        help=f"stop arrivals after this long (default: the schedule's, else {_DEFAULT_DURATION_S:g} s)",
    )
    bounds.add_argument("--max-requests", type=_positive(int), help="stop after this many arrivals")
    bounds.add_argument(
        "--max-concurrency", type=_positive(int), default=512, help="requests in flight at most (512)"
    )
    bounds.add_argument(
        "--timeout", type=_positive(float), default=300.0, help="seconds a request may take (300)"
    )
    server = parser.add_argument_group("server")
    server.add_argument("--endpoint", choices=[e.value for e in Endpoint], default=Endpoint.COMPLETIONS.value)
    server.add_argument("--model", help="model name (default: the first /v1/models lists)")
    server.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token (default $OPENAI_API_KEY)"
    )
    server.add_argument(
        "--no-ignore-eos", dest="ignore_eos", action="store_false", help="do not send vLLM's ignore_eos: true"
    )
    slo = parser.add_argument_group("SLO (default: the pool's, else an InferencePool's default)")
    slo.add_argument("--slo-ttft-ms", type=_positive(float), help="TTFT target")
    slo.add_argument("--slo-itl-ms", type=_positive(float), help="ITL target")
    slo.add_argument(
        "--slo-percentile", type=_positive(float), help="share of requests that must meet both, in %%"
    )
    slo.add_argument(
        "--slo-itl-stat",
        type=_parsed(ItlStatistic.parse),
        default=ItlStatistic(),
        help="per-request ITL judged: mean (default), max or pNN",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--percentiles", type=_parsed(_percentiles), default=DEFAULT_PERCENTILES, help="e.g. 50,90,99"
    )
    out.add_argument("--json", type=Path, help="write the summary as JSON here")
    out.add_argument("--records", type=Path, help="write one JSON line per request here")
    out.add_argument("--chart", type=Path, help="write a PNG chart of the run over time here")
    out.add_argument(
        "--window", type=_positive(float), help="seconds per chart window (default: about 40 windows)"
    )
    out.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress line on stderr"
    )
    pool = parser.add_argument_group("pool (replicas over time, defaults)")
    pool.add_argument("--pool", help="InferencePool name")
    pool.add_argument("--namespace", help="its namespace (default: the kubeconfig context's)")
    pool.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    pool.add_argument(
        "--replicas-interval", type=_positive(float), default=1.0, help="seconds between reads (1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds arrivals, lengths and prompts")
    parser.set_defaults(run=_run)


class UsageError(ValueError):
    """Arguments that describe no run."""


def traffic_of(args: argparse.Namespace, workload: WorkloadSpec) -> tuple[Traffic, float | None]:
    """The traffic the arguments ask for, and the duration that bounds its arrivals (None: none)."""
    if args.trace is not None:
        if args.prompt_tokens or args.output_tokens:
            raise UsageError("a trace gives each request's lengths: drop --prompt-tokens/--output-tokens")
        if args.burstiness is not None:
            raise UsageError("a trace gives each request's time: drop --burstiness")
        try:
            with args.trace.open() as lines:
                entries = parse_trace(lines, str(args.trace))
        except OSError as exc:
            raise UsageError(f"cannot read the trace: {exc}") from exc
        return Traffic(trace=entries, trace_speed=args.trace_speed or 1.0), args.duration
    if args.trace_speed is not None:
        raise UsageError("--trace-speed needs --trace")
    prompts: Lengths = args.prompt_tokens or from_token_stats(workload.prompt_tokens)
    outputs: Lengths = args.output_tokens or from_token_stats(workload.output_tokens)
    if args.schedule is not None:
        schedule: RateSchedule = args.schedule
        duration = min(schedule.duration_s, args.duration or math.inf)
    else:
        duration = args.duration or (math.inf if args.max_requests else _DEFAULT_DURATION_S)
        schedule = RateSchedule.constant(args.rate or workload.requests_per_second, duration)
    return Traffic(schedule, prompts, outputs, args.burstiness or 1.0), None if math.isinf(
        duration
    ) else duration


def slo_of(args: argparse.Namespace, base: SloSpec) -> SloSpec:
    overrides = {"ttft_ms": args.slo_ttft_ms, "itl_ms": args.slo_itl_ms, "percentile": args.slo_percentile}
    try:
        return SloSpec.model_validate(
            {**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
    except ValueError as exc:
        raise UsageError(f"SLO: {exc}") from exc


def describe_traffic(traffic: Traffic) -> str:
    if traffic.trace is not None:
        speed = f" at {traffic.trace_speed:g}x" if traffic.trace_speed != 1 else ""
        return f"trace of {len(traffic.trace)} requests{speed}"
    assert traffic.schedule and traffic.prompts and traffic.outputs
    process = "Poisson" if traffic.burstiness == 1 else f"gamma (burstiness {traffic.burstiness:g})"
    return (
        f"{process} {traffic.schedule.describe()}, prompts {traffic.prompts.describe()},"
        f" outputs {traffic.outputs.describe()}"
    )


def _write_outputs(
    args: argparse.Namespace, settings: LoadSettings, result: RunResult, slo: SloSpec, pool: str | None
) -> None:
    summary = summarize(result.records, slo, args.slo_itl_stat, args.percentiles)
    width = args.window or window_width(summary.duration_s)
    series = windows(result.records, width, slo, args.slo_itl_stat)
    traffic = describe_traffic(settings.traffic)
    header = [
        ("Target", f"{settings.url} ({settings.endpoint} endpoint)"),
        ("Model", result.model),
        ("Traffic", traffic),
        ("Prompt tokens", result.calibration.describe()),
        ("Seed", str(settings.seed)),
        ("Client CPU", f"{result.client_cpu_s / max(summary.duration_s, 1e-9):.0%} of one core"),
    ]
    if result.interrupted:
        header.append(("Interrupted", "yes: unfinished requests count as cancelled"))
    print(summary_text(summary, header, settings.max_concurrency))
    run = {
        "url": settings.url,
        "endpoint": str(settings.endpoint),
        "model_id": result.model,
        "traffic": traffic,
        "seed": settings.seed,
        "max_concurrency": settings.max_concurrency,
        "ignore_eos": settings.ignore_eos,
        "prompt_calibration": result.calibration.describe(),
        "interrupted": result.interrupted,
        "client_cpu_s": result.client_cpu_s,
        "pool": pool,
    }
    replicas = [vars(sample) for sample in result.replicas]
    if args.json:
        args.json.write_text(json.dumps(summary_json(summary, run, series, replicas), indent=2) + "\n")
    if args.records:
        with args.records.open("w") as out:
            for record in result.records:
                out.write(json.dumps(record.to_json()) + "\n")
    if args.chart:
        from tandem.load.chart import draw_chart  # matplotlib loads only when a chart is asked for

        title = f"tandem load: {result.model} at {settings.url}\n{traffic}"
        draw_chart(args.chart, series, slo, title, settings.traffic.schedule, result.replicas)


async def _main(args: argparse.Namespace) -> int:
    pool: KubernetesPool | None = None
    try:
        resource: InferencePool | None = None
        if args.pool:
            from tandem.load.kube import KubernetesPool  # the Kubernetes client loads only for a pool

            pool = await KubernetesPool.connect(args.pool, args.namespace, args.kubeconfig)
            resource = await pool.resource()
        spec = resource.spec if resource else None
        url = args.url or (
            resource.status.router.endpoint
            if resource and resource.status and resource.status.router
            else None
        )
        if not url:
            raise UsageError(
                "give the server's URL"
                + (f" (pool {args.pool} reports no router endpoint yet)" if args.pool else "")
            )
        traffic, duration = traffic_of(args, spec.workload if spec else WorkloadSpec())
        slo = slo_of(args, spec.slo if spec else SloSpec())
        settings = LoadSettings(
            url=url.rstrip("/").removesuffix("/v1"),
            traffic=traffic,
            endpoint=Endpoint(args.endpoint),
            model=args.model,
            api_key=args.api_key,
            duration_s=duration,
            max_requests=args.max_requests,
            seed=args.seed,
            max_concurrency=args.max_concurrency,
            timeout_s=args.timeout,
            ignore_eos=args.ignore_eos,
            replicas_interval_s=args.replicas_interval,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def interrupt() -> None:  # the first Ctrl-C ends the run with a summary, a second one at once
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)

        loop.add_signal_handler(signal.SIGINT, interrupt)
        result = await execute(
            settings,
            stop=stop,
            pool=pool,
            progress_out=sys.stderr if args.progress else None,
            redraw=sys.stderr.isatty(),
        )
        _write_outputs(args, settings, result, slo, args.pool)
        return 0
    except (UsageError, TraceError, ScheduleError, LengthError) as exc:
        print(f"tandem load: {exc}", file=sys.stderr)
        return 2
    except (LoadError, PoolError) as exc:
        print(f"tandem load: {exc}", file=sys.stderr)
        return 1
    finally:
        if pool is not None:
            await pool.close()
        with contextlib.suppress(RuntimeError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # uvloop, as the router and the simulator run on: its loop costs the client less CPU per streamed
    # chunk than asyncio's (benchmarks/stream_cpu.py); the timestamps are the same clock reads, taken
    # when a chunk arrives.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_main(args))
