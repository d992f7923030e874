"""The progress bar: one line, redrawn in place on a terminal, printed now and then elsewhere."""

from __future__ import annotations

import asyncio
from typing import TextIO

from tandem.load.clock import Clock
from tandem.load.openloop import Progress


def progress_line(
    progress: Progress, elapsed_s: float, duration_s: float | None, total: int | None, width: int = 20
) -> str:
    """``[#####-----]  12.0/60 s  due 118  in flight 7  done 110  failed 1  held 0``.

    The bar fills with time when the run has a duration, else with arrivals out of ``total``.
    """
    if duration_s:
        share = min(1.0, elapsed_s / duration_s)
        where = f"{elapsed_s:6.1f}/{duration_s:g} s"
    else:
        share = min(1.0, progress.due / total) if total else 0.0
        where = f"{elapsed_s:6.1f} s"
    filled = round(share * width)
    bar = "#" * filled + "-" * (width - filled)
    counts = (
        f"due {progress.due}  in flight {progress.in_flight}  done {progress.completed}"
        f"  failed {progress.failed}  held {progress.held}"
    )
    return f"[{bar}] {where}  {counts}"


async def show_progress(
    progress: Progress,
    clock: Clock,
    out: TextIO,
    duration_s: float | None,
    total: int | None,
    interval_s: float,
    redraw: bool,
) -> None:
    """Until cancelled: redraw the line every ``interval_s`` (``redraw``: in place, for a terminal)."""
    try:
        while True:
            line = progress_line(progress, clock.now(), duration_s, total)
            out.write(f"\r{line}\x1b[K" if redraw else f"{line}\n")
            out.flush()
            await asyncio.sleep(interval_s)
    finally:
        if redraw:
            out.write(f"\r{progress_line(progress, clock.now(), duration_s, total)}\x1b[K\n")
            out.flush()
