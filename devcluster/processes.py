"""Starting and stopping the devcluster's child processes.

Every child starts in its own session (so its process group id is its pid), and is stopped by
signalling that group: SIGTERM, then SIGKILL once the grace period is over. Where util-linux
``setpriv`` exists the child also gets SIGKILL as its parent-death signal, so a supervisor killed
with SIGKILL still takes its children with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

# Re-exported: the devcluster's callers pick their ports here.
from tandem.sim.ports import free_port as free_port

_SETPRIV = shutil.which("setpriv")


def with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so the process gets SIGKILL when its parent dies (when setpriv exists)."""
    if _SETPRIV is None:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


async def spawn(
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start ``argv`` in a new session, its stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *with_parent_death_signal(argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def signal_group(pgid: int, signum: signal.Signals) -> None:
    """Send ``signum`` to the process group ``pgid``; a group that is gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def stop_group(process: asyncio.subprocess.Process, grace: float) -> int:
    """Stop ``process`` and its group: SIGTERM, SIGKILL after ``grace`` seconds; the exit status."""
    if process.returncode is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=max(grace, 0.0))
        except TimeoutError:
            signal_group(process.pid, signal.SIGKILL)
            await process.wait()
    # Whatever the leader left behind in its group goes too, as a container's processes do.
    signal_group(process.pid, signal.SIGKILL)
    return process.returncode if process.returncode is not None else -signal.SIGKILL


def child_pids(parent: int) -> list[int]:
    """The pids of ``parent``'s living children (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            children.append(int(entry.name))
    return children


def kill_children() -> None:
    """SIGKILL the process group of every child of this process: the last safety net at exit."""
    for pid in child_pids(os.getpid()):
        signal_group(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tail(path: Path, limit: int = 3000) -> str:
    """The last ``limit`` characters of a log file, for error messages."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace")
