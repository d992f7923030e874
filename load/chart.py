"""The run over time as a PNG: request rate, TTFT and ITL at the SLO percentile, attainment, replicas.

Drawn with matplotlib's Agg renderer on a bare ``Figure`` (no pyplot, no display, no global state),
so it works on a server and in a container.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tandem.api import SloSpec
from tandem.load.replicas import ReplicaSample
from tandem.load.schedule import RateSchedule
from tandem.load.stats import Window


def _steps(windows: Sequence[Window], values: Sequence[float | None]) -> tuple[list[float], list[float]]:
    """Window edges and values for ``Axes.step(where="post")``: the last value held to the last edge."""
    edges = [w.start_s for w in windows] + [windows[-1].start_s + windows[-1].width_s]
    ys = [math.nan if v is None else v for v in values]
    return edges, [*ys, ys[-1]]


def _target(ax: Axes, value: float, label: str) -> None:
    ax.axhline(value, color="tab:red", linestyle="--", linewidth=1, label=label)


def _latency(
    ax: Axes, windows: Sequence[Window], values: Sequence[float | None], name: str, target: float, p: str
) -> None:
    ax.step(*_steps(windows, values), where="post", color="tab:blue", label=f"{name} {p}")
    _target(ax, target, f"target {target:g} ms")
    ax.set_ylabel(f"{name} {p} (ms)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize="small")


def draw_chart(
    path: Path,
    windows: Sequence[Window],
    slo: SloSpec,
    title: str,
    schedule: RateSchedule | None = None,
    replicas: Sequence[ReplicaSample] = (),
) -> None:
    """Write the chart of ``windows`` (and of ``replicas``, when any were read) to ``path``."""
    panels = 5 if replicas else 4
    figure = Figure(figsize=(10, 2.3 * panels + 0.6), layout="constrained")
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(title, fontsize="medium")
    p = f"p{slo.percentile:g}"
    end = windows[-1].start_s + windows[-1].width_s if windows else 0.0

    rate = axes[0]
    if schedule is not None:
        xs = [end * i / 400 for i in range(401)]
        rate.plot(xs, [schedule.rate_at(x) for x in xs], color="0.4", linestyle=":", label="scheduled")
    if windows:
        rate.step(*_steps(windows, [w.arrival_rate for w in windows]), where="post", label="arrivals")
        rate.step(*_steps(windows, [w.completion_rate for w in windows]), where="post", label="completions")
        rate.step(
            *_steps(windows, [w.error_rate for w in windows]), where="post", color="tab:red", label="errors"
        )
        _latency(axes[1], windows, [w.ttft_ms for w in windows], "TTFT", slo.ttft_ms, p)
        _latency(axes[2], windows, [w.itl_ms for w in windows], "ITL", slo.itl_ms, p)
        shares = [None if w.attainment is None else w.attainment * 100 for w in windows]
        axes[3].step(
            *_steps(windows, shares), where="post", color="tab:green", label="requests meeting the SLO"
        )
    rate.set_ylabel("requests/s")
    rate.set_ylim(bottom=0)
    rate.legend(loc="upper left", fontsize="small")
    attained = axes[3]
    _target(attained, slo.percentile, f"needed {slo.percentile:g}%")
    attained.set_ylabel("SLO attainment (%)")
    attained.set_ylim(0, 105)
    attained.legend(loc="lower left", fontsize="small")

    if replicas:
        ax = axes[4]
        for number, role in enumerate(sorted({s.role for s in replicas})):
            samples = sorted((s for s in replicas if s.role == role), key=lambda s: s.t_s)
            xs = [s.t_s for s in samples] + [max(end, samples[-1].t_s)]
            color = f"C{number}"
            ax.step(
                xs,
                [s.desired for s in samples] + [samples[-1].desired],
                where="post",
                color=color,
                label=f"{role} desired",
            )
            ax.step(
                xs,
                [s.ready for s in samples] + [samples[-1].ready],
                where="post",
                color=color,
                linestyle="--",
                label=f"{role} ready",
            )
        ax.set_ylabel("replicas")
        ax.set_ylim(bottom=0)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="upper left", fontsize="small", ncols=2)

    axes[-1].set_xlabel("seconds from the start of the run")
    axes[-1].set_xlim(0, max(end, 1.0))
    for ax in axes:
        ax.grid(True, alpha=0.3)
    figure.savefig(path, dpi=100)
