"""Whether the pods' processes had the CPU they needed during a run, from /proc.

For each process: its CPU time (``/proc/PID/stat`` utime + stime, every thread) and the time its
threads were runnable but waiting for a CPU (``/proc/PID/task/*/schedstat``, second field, in ns),
both over the run's wall time. A simulator whose step loop waited for a CPU ends its steps late, and
the running step clock makes that up only while the loop keeps pace: its latencies then measure the
machine, not the timing model. A run is *starved* when any engine waited for a CPU more than
``STARVED_WAIT`` of the run, or was busy more than ``STARVED_BUSY`` of one core (its loop, single
threaded, cannot go faster).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

STARVED_WAIT = 0.10
STARVED_BUSY = 0.80
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Reading:
    cpu_s: float
    wait_s: float


def read(pid: int) -> Reading | None:
    """The process's CPU and run-queue wait so far; None once it is gone."""
    proc = Path(f"/proc/{pid}")
    try:
        # The command name (field 2) may hold spaces: the fields after its ")" are fixed.
        fields = proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        wait = 0
        for task in proc.joinpath("task").iterdir():
            wait += int(task.joinpath("schedstat").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return Reading(cpu, wait / 1e9)


@dataclass(frozen=True)
class Share:
    """One process over a run: CPU busy and run-queue wait as shares of the wall time."""

    name: str
    role: str
    busy: float
    waiting: float

    @property
    def starved(self) -> bool:
        return self.waiting > STARVED_WAIT or self.busy > STARVED_BUSY


Process = tuple[str, str, int]  # name, role, pid


class Meter:
    """Readings of some processes at the start of a run; :meth:`shares` at its end, of those and of
    processes started meanwhile (a scale-up's pods), whose whole life is within the run."""

    def __init__(self, processes: Iterable[Process], clock: float) -> None:
        self._start = clock
        self._first = {process: read(process[2]) for process in processes}

    def shares(self, processes: Iterable[Process], clock: float) -> list[Share]:
        wall = max(clock - self._start, 1e-9)
        found = []
        for process in {*self._first, *processes}:
            name, role, pid = process
            first = self._first.get(process, Reading(0.0, 0.0))
            last = read(pid)
            if first is None or last is None:
                continue
            found.append(
                Share(name, role, (last.cpu_s - first.cpu_s) / wall, (last.wait_s - first.wait_s) / wall)
            )
        return sorted(found, key=lambda share: (share.role, share.name))


def describe(shares: Iterable[Share]) -> str:
    """``decode 34%+2%w, router 41%+3%w``: busy and waiting per process."""
    return ", ".join(f"{s.role} {s.busy:.0%}+{s.waiting:.0%}w" for s in shares)
