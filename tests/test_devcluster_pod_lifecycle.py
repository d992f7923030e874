"""Pod lifecycle on the devcluster kubelet: crashes, restarts, probes, unrunnable images, deletion."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from tandem.devcluster.testing import container_pid, ready_endpoints, wait_for

pytestmark = pytest.mark.cluster

SERVE = [sys.executable, "-m", "http.server", "8080", "--bind", "$(TANDEM_BIND_HOST)"]


def pod(name: str, command: list[str], restart_policy: str = "Always", **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "python:3.11", "command": command, **container}],
        },
    }


def read(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    return core.read_namespaced_pod(name, namespace)


def pod_when(
    core: client.CoreV1Api, namespace: str, name: str, condition: Callable[[client.V1Pod], Any]
) -> client.V1Pod | None:
    """The pod, if ``condition`` holds for it now."""
    found = read(core, namespace, name)
    return found if condition(found) else None


def first_status(item: client.V1Pod) -> client.V1ContainerStatus | None:
    statuses = item.status.container_statuses or []
    return statuses[0] if statuses else None


def is_ready(item: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in item.status.conditions or [])


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().rsplit(")", 1)[-1].split()[0] == "Z"


def test_killed_process_turns_pod_not_ready_and_leaves_the_slice(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    probe = {"httpGet": {"port": 8080, "path": "/"}, "periodSeconds": 1}
    core.create_namespaced_pod(namespace, pod("web", SERVE, restart_policy="Never", readinessProbe=probe))
    core.create_namespaced_service(
        namespace,
        {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
    )
    running = wait_for(lambda: pod_when(core, namespace, "web", is_ready), message="pod web Ready")
    wait_for(lambda: ready_endpoints(kube_api, namespace, "web") == {(running.status.pod_ip, 8080)}, message="web in slice")

    os.kill(container_pid(running), signal.SIGKILL)

    failed = wait_for(
        lambda: pod_when(core, namespace, "web", lambda p: p.status.phase == "Failed"),
        message="pod web Failed after its process was killed",
    )
    assert not is_ready(failed)
    terminated = failed.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 128 + signal.SIGKILL
    wait_for(lambda: not ready_endpoints(kube_api, namespace, "web"), message="web gone from the slice")


def test_crashing_container_restarts_with_growing_count(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, pod("crash", [sys.executable, "-c", "import sys; sys.exit(3)"]))

    def backing_off(item: client.V1Pod) -> bool:
        status = first_status(item)
        waiting = status.state.waiting if status is not None else None
        return bool(status and status.restart_count >= 2 and waiting and waiting.reason == "CrashLoopBackOff")

    restarted = wait_for(
        lambda: pod_when(core, namespace, "crash", backing_off),
        timeout=30,
        message="two restarts of the crashing container, then a back-off",
    )
    status = restarted.status.container_statuses[0]
    assert status.last_state.terminated.exit_code == 3
    assert restarted.status.phase == "Running"  # restartPolicy Always: a crash loop is still Running
    assert not is_ready(restarted)


def test_failing_liveness_probe_restarts_the_process(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    # Nothing listens on port 9: the probe fails and the kubelet restarts the container.
    liveness = {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}
    manifest = pod("sleeper", ["sleep", "600"], livenessProbe=liveness)
    manifest["spec"]["terminationGracePeriodSeconds"] = 1
    core.create_namespaced_pod(namespace, manifest)
    first = wait_for(
        lambda: pod_when(core, namespace, "sleeper", lambda p: (s := first_status(p)) and s.container_id),
        message="the sleeper running",
    )
    first_pid = container_pid(first)
    restarted = wait_for(
        lambda: pod_when(core, namespace, "sleeper", lambda p: (s := first_status(p)) and s.restart_count >= 1),
        timeout=30,
        message="a restart after the liveness probe failed",
    )
    last = restarted.status.container_statuses[0].last_state.terminated
    assert "liveness probe failed" in last.message
    assert not process_exists(first_pid)


@pytest.mark.parametrize(
    ("image", "command", "named"),
    [
        ("docker.io/library/nginx:1.25", None, "docker.io/library/nginx:1.25"),
        ("busybox:1.36", ["no-such-program-on-this-machine", "--flag"], "no-such-program-on-this-machine"),
    ],
    ids=["no-command", "missing-program"],
)
def test_unrunnable_image_fails_the_pod_with_a_clear_reason(
    kube_api: Any, namespace: str, image: str, command: list[str] | None, named: str
) -> None:
    core = client.CoreV1Api(kube_api)
    manifest = pod("odd", command or [], restart_policy="Never")
    manifest["spec"]["containers"][0]["image"] = image
    if command is None:
        del manifest["spec"]["containers"][0]["command"]
    core.create_namespaced_pod(namespace, manifest)

    failed = wait_for(
        lambda: pod_when(core, namespace, "odd", lambda p: p.status.phase == "Failed"),
        message="the pod with an unrunnable image Failed",
    )
    waiting = failed.status.container_statuses[0].state.waiting
    assert waiting.reason == "ImageNotRunnable"
    assert named in waiting.message


def test_deleted_pod_stops_its_process_then_disappears(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, pod("doomed", SERVE))
    running = wait_for(lambda: pod_when(core, namespace, "doomed", is_ready), message="pod doomed Ready")
    pid = container_pid(running)

    core.delete_namespaced_pod("doomed", namespace)

    def gone() -> bool:
        try:
            read(core, namespace, "doomed")
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout=20, message="the deleted pod removed from the API")
    assert not process_exists(pid)
