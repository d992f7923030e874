"""A pod's status from its containers' states: pure functions producing the API's JSON.

``pod_phase`` follows the kubelet's ``getPhase``. One addition: a container whose image cannot run
here (``ImageNotRunnable``) makes a ``restartPolicy: Never`` pod Failed, since nothing will ever
change; other pods stay Pending with the reason, as with an image that cannot be pulled (a Failed
pod of a ReplicaSet would only be replaced by another that fails the same way).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem.devcluster.images import NOT_RUNNABLE_REASON


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API stores times."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str | None = None


@dataclass(frozen=True)
class Running:
    started_at: datetime.datetime


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    started_at: datetime.datetime
    finished_at: datetime.datetime
    container_id: str
    reason: str = ""
    message: str | None = None

    @classmethod
    def of_exit(
        cls, returncode: int, started_at: datetime.datetime, container_id: str, message: str | None = None
    ) -> Terminated:
        """A process's exit: a signal N becomes 128+N, as container runtimes report it."""
        code = 128 - returncode if returncode < 0 else returncode
        return cls(
            exit_code=code,
            started_at=started_at,
            finished_at=now(),
            container_id=container_id,
            reason="Completed" if code == 0 else "Error",
            message=message,
        )


ContainerState = Waiting | Running | Terminated


@dataclass
class ContainerStatus:
    """What the kubelet knows about one container; its runner updates it."""

    name: str
    image: str
    state: ContainerState = field(default_factory=lambda: Waiting("ContainerCreating"))
    last_state: Terminated | None = None
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    container_id: str | None = None


def _state_json(state: ContainerState | None) -> dict[str, Any]:
    if isinstance(state, Waiting):
        waiting: dict[str, Any] = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": timestamp(state.started_at)}}
    if isinstance(state, Terminated):
        terminated: dict[str, Any] = {
            "exitCode": state.exit_code,
            "reason": state.reason,
            "startedAt": timestamp(state.started_at),
            "finishedAt": timestamp(state.finished_at),
            "containerID": state.container_id,
        }
        if state.message:
            terminated["message"] = state.message
        return {"terminated": terminated}
    return {}


def container_status_json(status: ContainerStatus) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": status.name,
        "image": status.image,
        "imageID": "",
        "ready": status.ready,
        "started": status.started,
        "restartCount": status.restart_count,
        "state": _state_json(status.state),
        "lastState": _state_json(status.last_state),
    }
    if status.container_id:
        body["containerID"] = status.container_id
    return body


def pod_phase(
    restart_policy: str,
    containers: Sequence[ContainerStatus],
    init_containers: Sequence[ContainerStatus] = (),
    initialized: bool = True,
) -> str:
    """Pending, Running, Succeeded or Failed, as the kubelet's ``getPhase`` decides."""
    every = [*init_containers, *containers]
    not_runnable = any(isinstance(c.state, Waiting) and c.state.reason == NOT_RUNNABLE_REASON for c in every)
    if not_runnable:
        return "Failed" if restart_policy == "Never" else "Pending"
    init_failed = any(isinstance(c.state, Terminated) and c.state.exit_code != 0 for c in init_containers)
    if init_failed and restart_policy == "Never":
        return "Failed"
    if not initialized:
        return "Pending"
    running = stopped = succeeded = waiting = 0
    for container in containers:
        if isinstance(container.state, Running):
            running += 1
        elif isinstance(container.state, Terminated):
            stopped += 1
            succeeded += container.state.exit_code == 0
        elif container.last_state is not None:
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


@dataclass(frozen=True)
class PodSnapshot:
    """Everything the pod's status is made of."""

    restart_policy: str
    pod_ip: str
    host_ip: str
    start_time: datetime.datetime
    initialized: bool
    containers: Sequence[ContainerStatus]
    init_containers: Sequence[ContainerStatus] = ()


def _condition(
    kind: str, ok: bool, previous: Mapping[str, tuple[str, str]], moment: datetime.datetime
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    since = before[1] if before is not None and before[0] == status else timestamp(moment)
    return {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}


def pod_status_json(
    snapshot: PodSnapshot, previous_conditions: Mapping[str, tuple[str, str]]
) -> dict[str, Any]:
    """The pod's ``status`` (JSON) for a merge patch; ``previous_conditions`` maps a condition type to
    (status, lastTransitionTime) of the status last written, so unchanged conditions keep their time."""
    moment = now()
    phase = pod_phase(
        snapshot.restart_policy, snapshot.containers, snapshot.init_containers, snapshot.initialized
    )
    ready = phase == "Running" and all(c.ready for c in snapshot.containers)
    return {
        "phase": phase,
        "hostIP": snapshot.host_ip,
        "podIP": snapshot.pod_ip,
        "podIPs": [{"ip": snapshot.pod_ip}],
        "startTime": timestamp(snapshot.start_time),
        "conditions": [
            _condition("PodScheduled", True, previous_conditions, moment),
            _condition("Initialized", snapshot.initialized, previous_conditions, moment),
            _condition("ContainersReady", ready, previous_conditions, moment),
            _condition("Ready", ready, previous_conditions, moment),
        ],
        "initContainerStatuses": [container_status_json(c) for c in snapshot.init_containers],
        "containerStatuses": [container_status_json(c) for c in snapshot.containers],
    }
