"""One container's life as a local process: start, probe, restart with back-off, stop.

A ``ContainerRunner`` owns a ``ContainerStatus`` and tells its pod when the status changes. Its
process is ``unshare --mount --uts -- python -m tandem.devcluster.podinit <launch.json>`` (see
``podinit``); the container ID is ``process://<pid>``, so a test can signal the process.
Restarts follow ``restartPolicy`` with a doubling back-off (``Backoff``), reset once a run lasted
twice the maximum, as the kubelet does; the restart count goes up at each restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.devcluster.env import EnvError
from tandem.devcluster.errors import DevClusterError
from tandem.devcluster.images import NOT_RUNNABLE_REASON, ImageNotRunnableError
from tandem.devcluster.launch import ContainerLaunch
from tandem.devcluster.podstatus import ContainerStatus, Running, Terminated, Waiting, now
from tandem.devcluster.probes import ProbeTiming, ProbeTracker, check
from tandem.devcluster.processes import spawn, stop_group
from tandem.devcluster.tasks import background
from tandem.devcluster.volumes import VolumeError

_CONFIG_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``initial`` doubling per consecutive crash, capped at ``maximum`` (seconds)."""

    initial: float
    maximum: float

    def delay(self, crashes: int) -> float:
        return float(min(self.initial * 2 ** max(crashes - 1, 0), self.maximum))


def restarts(restart_policy: str, exit_code: int, init: bool) -> bool:
    """Whether a container that exited with ``exit_code`` is started again."""
    if restart_policy == "Never":
        return False
    if init or restart_policy == "OnFailure":
        return exit_code != 0
    return True


def check_runtime() -> None:
    """Pods run in private mount namespaces: that needs root and util-linux unshare/nsenter (and
    setpriv, for exec probes as the container's user)."""
    if os.geteuid() != 0:
        raise DevClusterError(
            "the devcluster kubelet runs each pod in a private mount namespace (unshare -m), which needs root"
        )
    missing = [program for program in ("unshare", "nsenter", "setpriv") if shutil.which(program) is None]
    if missing:
        raise DevClusterError(f"the devcluster kubelet needs util-linux {', '.join(missing)} on PATH")


def write_launch(launch: ContainerLaunch, launch_file: Path) -> None:
    """Write podinit's input; readable by root only (it holds the container's environment)."""
    launch_file.parent.mkdir(parents=True, exist_ok=True)
    launch_file.write_text(launch.model_dump_json())
    launch_file.chmod(0o600)


def container_argv(launch_file: Path) -> list[str]:
    """A private mount and UTS namespace, in which ``podinit`` prepares and execs the program."""
    unshare = ["unshare", "--mount", "--uts", "--propagation", "private", "--"]
    return [*unshare, sys.executable, "-m", "tandem.devcluster.podinit", str(launch_file)]


async def start_process(launch: ContainerLaunch, launch_file: Path, log: Path) -> asyncio.subprocess.Process:
    """Start the container's process."""
    write_launch(launch, launch_file)
    return await spawn(container_argv(launch_file), log)


# Builds the container's launch each time it starts (the environment is read anew, as Kubernetes does).
LaunchPreparer = Callable[[], Awaitable[ContainerLaunch]]


@dataclass(frozen=True)
class RunnerSettings:
    restart_policy: str
    init: bool
    grace: float
    backoff: Backoff
    pod_ip: str
    launch_file: Path
    log: Path
    probe_poll: float | None  # NodeSettings.probe_poll_seconds


class ContainerRunner:
    """Runs ``container`` (a V1Container) until it ends for good or ``stop`` is called."""

    def __init__(
        self,
        container: Any,
        status: ContainerStatus,
        settings: RunnerSettings,
        prepare: LaunchPreparer,
        on_change: Callable[[], None],
    ) -> None:
        self._container = container
        self.status = status
        self._settings = settings
        self._prepare = prepare
        self._on_change = on_change
        self._grace = settings.grace
        self._task: asyncio.Task[None] | None = None
        self._readiness: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = background(self._run(), name=f"container {self._container.name}")

    async def wait(self) -> None:
        """Until the container ends for good (never, for a restarting one)."""
        if self._task is not None:
            await self._task

    async def stop(self, grace: float) -> None:
        """Stop the process: SIGTERM to its group, SIGKILL after ``grace`` seconds."""
        if self._task is None:
            return
        self._grace = grace
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    @property
    def succeeded(self) -> bool:
        return isinstance(self.status.state, Terminated) and self.status.state.exit_code == 0

    def _set(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.status, name, value)
        self._on_change()

    async def _run(self) -> None:
        crashes = 0
        while True:
            try:
                launch = await self._prepare()
            except ImageNotRunnableError as exc:
                self._set(state=Waiting(NOT_RUNNABLE_REASON, str(exc)))
                return
            except (EnvError, VolumeError) as exc:
                self._set(state=Waiting("CreateContainerConfigError", str(exc)))
                await asyncio.sleep(_CONFIG_RETRY_SECONDS)
                continue
            try:
                terminated = await self._run_once(launch)
            except OSError as exc:  # the runtime itself failed (unshare missing, disk full ...)
                self._set(state=Waiting("RunContainerError", str(exc)))
                await asyncio.sleep(self._settings.backoff.delay(crashes := crashes + 1))
                continue
            if not restarts(self._settings.restart_policy, terminated.exit_code, self._settings.init):
                return
            ran = (terminated.finished_at - terminated.started_at).total_seconds()
            crashes = 1 if ran >= 2 * self._settings.backoff.maximum else crashes + 1
            delay = self._settings.backoff.delay(crashes)
            message = f"back-off {delay:g}s restarting failed container={self._container.name}"
            self._set(last_state=terminated, state=Waiting("CrashLoopBackOff", message))
            await asyncio.sleep(delay)
            self.status.restart_count += 1

    async def _run_once(self, launch: ContainerLaunch) -> Terminated:
        started_at = now()
        process = await start_process(launch, self._settings.launch_file, self._settings.log)
        container_id = f"process://{process.pid}"
        probing = not self._settings.init
        self._set(
            state=Running(started_at),
            container_id=container_id,
            started=probing and self._container.startup_probe is None,
            ready=probing
            and self._container.startup_probe is None
            and self._container.readiness_probe is None,
        )
        probes = asyncio.create_task(self._probe(process.pid, launch)) if probing else None
        exited = asyncio.create_task(process.wait())
        message: str | None = None
        try:
            if probes is not None:
                done, _ = await asyncio.wait({exited, probes}, return_when=asyncio.FIRST_COMPLETED)
                message = probes.result() if probes in done else None
            if message is None:
                await exited
        finally:
            for task in (probes, self._readiness):
                if task is not None:
                    task.cancel()
            # The process ends with its group: when it exits, when a probe failed, or on stop().
            returncode = await asyncio.shield(stop_group(process, self._grace))
        terminated = Terminated.of_exit(returncode, started_at, container_id, message)
        self._set(state=terminated, ready=self._settings.init and terminated.exit_code == 0, started=False)
        return terminated

    async def _probe(self, pid: int, launch: ContainerLaunch) -> str | None:
        """Run the probes: a message when startup or liveness failed for good, None when only
        readiness (if any) goes on, in its own task."""
        container = self._container
        if container.startup_probe is not None:
            timing = ProbeTiming.of(container.startup_probe).polled(self._settings.probe_poll)
            if not await self._verdict(container.startup_probe, timing, pid, launch, stop_on=(True, False)):
                return "startup probe failed"
            self._set(started=True, ready=container.readiness_probe is None)
        if container.readiness_probe is not None:
            self._readiness = asyncio.create_task(
                self._readiness_loop(container.readiness_probe, pid, launch)
            )
        if container.liveness_probe is not None:
            timing = ProbeTiming.of(container.liveness_probe)
            await self._verdict(container.liveness_probe, timing, pid, launch, stop_on=(False,))
            return "liveness probe failed, container will be restarted"
        return None

    async def _verdict(
        self, probe: Any, timing: ProbeTiming, pid: int, launch: ContainerLaunch, stop_on: tuple[bool, ...]
    ) -> bool:
        """Probe until the verdict is one of ``stop_on``; that verdict."""
        tracker = ProbeTracker(timing)
        await asyncio.sleep(timing.initial_delay)
        while True:
            passed = await check(probe, self._settings.pod_ip, self._container.ports or [], pid, launch)
            verdict = tracker.record(passed)
            if verdict is not None and verdict in stop_on:
                return verdict
            await asyncio.sleep(timing.period)

    async def _readiness_loop(self, probe: Any, pid: int, launch: ContainerLaunch) -> None:
        timing = ProbeTiming.of(probe)
        tracker = ProbeTracker(timing)
        await asyncio.sleep(timing.initial_delay)
        until_ready = timing.polled(self._settings.probe_poll).period  # until first ready
        been_ready = False
        while True:
            passed = await check(probe, self._settings.pod_ip, self._container.ports or [], pid, launch)
            ready = tracker.record(passed) is True
            if ready != self.status.ready:
                self._set(ready=ready)
            been_ready = been_ready or ready
            await asyncio.sleep(timing.period if been_ready else until_ready)
