"""The pod status the devcluster kubelet reports, as the kubelet's getPhase decides it."""

from __future__ import annotations

import datetime

import pytest

from tandem.devcluster.podstatus import (
    ContainerStatus,
    PodSnapshot,
    Running,
    Terminated,
    Waiting,
    pod_phase,
    pod_status_json,
)

T0 = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def running() -> ContainerStatus:
    return ContainerStatus("c", "img", state=Running(T0), ready=True, started=True)


def exited(code: int) -> ContainerStatus:
    return ContainerStatus("c", "img", state=Terminated.of_exit(code, T0, "process://1"))


def waiting(reason: str = "ContainerCreating", restarted: bool = False) -> ContainerStatus:
    last = Terminated(1, T0, T0, "process://1") if restarted else None
    return ContainerStatus("c", "img", state=Waiting(reason), last_state=last)


@pytest.mark.parametrize(
    ("policy", "containers", "phase"),
    [
        ("Always", [waiting()], "Pending"),
        ("Always", [running()], "Running"),
        ("Always", [running(), waiting()], "Pending"),
        ("Always", [exited(0)], "Running"),
        ("Always", [waiting("CrashLoopBackOff", restarted=True)], "Running"),
        ("Never", [exited(0), exited(0)], "Succeeded"),
        ("Never", [exited(0), exited(2)], "Failed"),
        ("Never", [running(), exited(2)], "Running"),
        ("OnFailure", [exited(2)], "Running"),
        ("OnFailure", [exited(0)], "Succeeded"),
        ("Never", [waiting("ImageNotRunnable")], "Failed"),
        ("Always", [waiting("ImageNotRunnable")], "Pending"),
    ],
)
def test_phase(policy: str, containers: list[ContainerStatus], phase: str) -> None:
    assert pod_phase(policy, containers) == phase


def test_failed_init_container_fails_a_never_restarting_pod() -> None:
    assert pod_phase("Never", [waiting()], [exited(1)], initialized=False) == "Failed"
    assert pod_phase("Always", [waiting()], [exited(1)], initialized=False) == "Pending"


def snapshot(*containers: ContainerStatus) -> PodSnapshot:
    return PodSnapshot("Always", "127.0.1.3", "127.0.0.1", T0, True, list(containers))


def conditions(status: dict[str, object]) -> dict[str, tuple[str, str]]:
    items = status["conditions"]
    assert isinstance(items, list)
    return {c["type"]: (c["status"], c["lastTransitionTime"]) for c in items}


def test_ready_only_when_every_container_is() -> None:
    ready = conditions(pod_status_json(snapshot(running(), running()), {}))
    assert ready["Ready"][0] == ready["ContainersReady"][0] == "True"
    half = conditions(pod_status_json(snapshot(running(), waiting()), {}))
    assert half["Ready"][0] == "False"


def test_unchanged_condition_keeps_its_transition_time() -> None:
    before = {"Ready": ("True", "2020-01-01T00:00:00Z"), "Initialized": ("False", "2020-01-01T00:00:00Z")}
    after = conditions(pod_status_json(snapshot(running()), before))
    assert after["Ready"] == ("True", "2020-01-01T00:00:00Z")
    assert after["Initialized"][1] != "2020-01-01T00:00:00Z"


def test_status_reports_pod_ip_and_container_states() -> None:
    status = pod_status_json(snapshot(exited(137)), {})
    assert status["podIP"] == "127.0.1.3"
    assert status["podIPs"] == [{"ip": "127.0.1.3"}]
    [container] = status["containerStatuses"]
    assert container["state"]["terminated"]["exitCode"] == 137
    assert container["state"]["terminated"]["reason"] == "Error"
    assert container["lastState"] == {}


def test_signal_exit_is_reported_as_128_plus_signal() -> None:
    assert Terminated.of_exit(-9, T0, "process://5").exit_code == 137
    assert Terminated.of_exit(0, T0, "process://5").reason == "Completed"
