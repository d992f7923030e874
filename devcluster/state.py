"""The record of a devcluster started by ``tandem devcluster up``, for ``down`` to find it.

``<state dir>/state.json`` holds the supervisor's pid with its start time (so a recycled pid is
never signalled), the kubeconfig and the work folder. The state dir is
``$XDG_RUNTIME_DIR/tandem-devcluster`` when that variable is set, else
``/tmp/tandem-devcluster-<uid>``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

_STATE_FILE = "state.json"


class RunningCluster(BaseModel):
    pid: int
    start_time: int
    server: str
    kubeconfig: Path
    work_dir: Path


def default_state_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "tandem-devcluster"
    return Path("/tmp") / f"tandem-devcluster-{os.getuid()}"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the parenthesised command name (state first); None if gone."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks after boot) of process ``pid``; None if there is none."""
    fields = _stat_fields(pid)
    # Field 22 of the whole line.
    return int(fields[19]) if fields is not None else None


def is_alive(record: RunningCluster) -> bool:
    """Whether the recorded process still runs (an exited one its parent has not reaped does not)."""
    fields = _stat_fields(record.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == record.start_time


def read(state_dir: Path) -> RunningCluster | None:
    path = state_dir / _STATE_FILE
    try:
        return RunningCluster.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None


def write(state_dir: Path, record: RunningCluster) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / _STATE_FILE
    staged = path.with_suffix(".tmp")
    staged.write_text(record.model_dump_json())
    staged.replace(path)


def remove(state_dir: Path) -> None:
    (state_dir / _STATE_FILE).unlink(missing_ok=True)
