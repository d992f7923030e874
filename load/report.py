"""A run's summary as text for a terminal and as JSON for tools.

The JSON's flat keys are ``vllm bench serve --save-result``'s (``completed``, ``failed``,
``request_throughput``, ``mean_ttft_ms``, ``p99_itl_ms``, ``request_goodput``, …: see
vllm/benchmarks/serve.py, ``benchmark``'s ``result``), so scripts that read one read the other;
Tandem's additions (errors by kind, held arrivals, SLO attainment, windows, replicas) sit beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from tandem.load.stats import Distribution, Summary, Window

_METRICS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E latency"))


def _p(p: float) -> str:
    return f"p{p:g}"


def distribution_keys(name: str, distribution: Distribution | None) -> dict[str, float | None]:
    """vLLM's flat keys for a metric: ``mean_ttft_ms``, ``median_ttft_ms``, ``std_ttft_ms``, ``p99_…``."""
    if distribution is None:
        return {f"mean_{name}_ms": None, f"median_{name}_ms": None, f"std_{name}_ms": None}
    keys: dict[str, float | None] = {
        f"mean_{name}_ms": distribution.mean,
        f"median_{name}_ms": distribution.median,
        f"std_{name}_ms": distribution.std,
    }
    keys.update({f"{_p(p)}_{name}_ms": value for p, value in distribution.percentiles.items()})
    return keys


def summary_json(
    summary: Summary,
    run: Mapping[str, Any],
    windows: Sequence[Window] = (),
    replicas: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The JSON document of a run: ``run`` (what was asked) and the figures."""
    slo = summary.slo
    data: dict[str, Any] = {
        **run,
        "duration": summary.duration_s,
        "requests": summary.requests,
        "sent": summary.sent,
        "completed": summary.completed,
        "failed": summary.failed,
        "errors_by_kind": summary.errors,  # vLLM's "errors" is a list of messages, one per request
        "held": summary.held,
        "prompt_mismatches": summary.prompt_mismatches,
        "total_input_tokens": summary.total_input_tokens,
        "total_output_tokens": summary.total_output_tokens,
        "request_throughput": summary.request_throughput,
        "output_throughput": summary.output_throughput,
        "total_token_throughput": summary.total_token_throughput,
        "request_goodput": slo.goodput,
        "slo": {
            **slo.slo.model_dump(),
            "itl_statistic": slo.itl_statistic,
            "good": slo.good,
            "judged": slo.judged,
            "attainment": slo.attainment,
            "met": slo.met,
            "ttft_at_percentile_ms": slo.ttft_at_percentile_ms,
            "itl_at_percentile_ms": slo.itl_at_percentile_ms,
        },
    }
    for name, _ in _METRICS:
        data.update(distribution_keys(name, getattr(summary, f"{name}_ms")))
    data.update(distribution_keys("send_lag", summary.send_lag_ms))
    data["windows"] = [asdict(w) for w in windows]
    data["replicas"] = [dict(r) for r in replicas]
    return data


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_text(summary: Summary, header: Sequence[tuple[str, str]], max_concurrency: int) -> str:
    """The summary a terminal shows: ``header`` (label, value) rows, then the figures."""
    rows: list[tuple[str, str]] = [*header]
    rows += [
        ("Duration (s)", _number(summary.duration_s)),
        ("Requests", f"{summary.requests} (completed {summary.completed}, failed {summary.failed})"),
        *((f"  {kind}", str(count)) for kind, count in summary.errors.items()),
        ("Held for a slot", f"{summary.held} (max concurrency {max_concurrency})"),
    ]
    if summary.send_lag_ms is not None:
        lag = summary.send_lag_ms
        worst = max(lag.percentiles.values(), default=lag.median)
        rows.append(("Send lag (ms)", f"median {lag.median:.1f}, {_p(max(lag.percentiles))} {worst:.1f}"))
    if summary.prompt_mismatches:
        rows.append(
            ("Prompt length off", f"{summary.prompt_mismatches} requests (the server counted otherwise)")
        )
    rows += [
        ("Input tokens", str(summary.total_input_tokens)),
        ("Output tokens", str(summary.total_output_tokens)),
        ("Request throughput (req/s)", _number(summary.request_throughput)),
        ("Output throughput (tok/s)", _number(summary.output_throughput)),
        ("Total token throughput (tok/s)", _number(summary.total_token_throughput)),
    ]
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label:<{width}}{value}" for label, value in rows]

    metrics: list[tuple[str, Distribution | None]] = [
        (label, getattr(summary, f"{name}_ms")) for name, label in _METRICS
    ]
    percentiles = next((list(d.percentiles) for _, d in metrics if d is not None), [])
    columns = ["mean", "std", *(_p(p) for p in percentiles)]
    lines.append("")
    lines.append(f"{'(ms)':<{width}}" + "".join(f"{c:>10}" for c in columns))
    for label, distribution in metrics:
        if distribution is None:
            cells = ["-"] * len(columns)
        else:
            values = [distribution.mean, distribution.std, *distribution.percentiles.values()]
            cells = [_number(v) for v in values]
        lines.append(f"{label:<{width}}" + "".join(f"{c:>10}" for c in cells))

    slo = summary.slo
    verdict = "met" if slo.met else "missed"
    lines += [
        "",
        f"{'SLO':<{width}}TTFT <= {slo.slo.ttft_ms:g} ms and ITL ({slo.itl_statistic})"
        f" <= {slo.slo.itl_ms:g} ms for {slo.slo.percentile:g}% of requests",
        f"{'  attainment':<{width}}{slo.attainment * 100:.1f}% ({slo.good} of {slo.judged}): {verdict}",
        f"{'  goodput (req/s)':<{width}}{slo.goodput:.2f}",
        f"{f'  TTFT {_p(slo.slo.percentile)} (ms)':<{width}}{_number(slo.ttft_at_percentile_ms, 1)}"
        f" (target {slo.slo.ttft_ms:g})",
        f"{f'  ITL {_p(slo.slo.percentile)} (ms)':<{width}}{_number(slo.itl_at_percentile_ms, 1)}"
        f" (target {slo.slo.itl_ms:g}, every chunk gap)",
    ]
    if summary.held:
        lines += [
            "",
            f"warning: {summary.held} arrivals waited for an in-flight slot, so they went out later than"
            " scheduled (see send lag): raise --max-concurrency for an open-loop run",
        ]
    return "\n".join(lines)
