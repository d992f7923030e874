"""Pod lifecycle on the devcluster kubelet: crashes, restarts, probes, unrunnable images, deletion."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tandem.devcluster import DevCluster
from tandem.devcluster.testing import (
    container_pid,
    container_status,
    pod_phase,
    pod_ready,
    ready_endpoints,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_devcluster")]

SERVE = [sys.executable, "-m", "http.server", "8080", "--bind", "$(TANDEM_BIND_HOST)"]


def pod(
    name: str, command: list[str] | None, restart_policy: str = "Always", **container: Any
) -> client.V1Pod:
    spec = {"name": "main", "image": "python:3.11", **container}
    if command is not None:
        spec["command"] = command
    return client.V1Pod.model_validate(
        {
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "restartPolicy": restart_policy,
                "terminationGracePeriodSeconds": 5,
                "containers": [spec],
            },
        }
    )


def pod_when(
    core: client.CoreV1Api, namespace: str, name: str, condition: Callable[[client.V1Pod], bool]
) -> client.V1Pod | None:
    """The pod, if ``condition`` holds for it now."""
    found = core.read_namespaced_pod(name, namespace)
    return found if condition(found) else None


def restarts(item: client.V1Pod) -> int:
    status = container_status(item)
    return status.restart_count if status is not None else 0


def last_terminated(item: client.V1Pod) -> client.V1ContainerStateTerminated:
    status = container_status(item)
    assert status is not None and status.last_state is not None and status.last_state.terminated is not None
    return status.last_state.terminated


def state(item: client.V1Pod) -> client.V1ContainerState:
    status = container_status(item)
    assert status is not None and status.state is not None
    return status.state


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a living process (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_killed_process_turns_pod_not_ready_and_leaves_the_slice(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    probe = {"httpGet": {"port": 8080, "path": "/"}, "periodSeconds": 1}
    core.create_namespaced_pod(namespace, pod("web", SERVE, restart_policy="Never", readinessProbe=probe))
    web = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    core.create_namespaced_service(namespace, client.V1Service.model_validate(web))
    running = wait_for(lambda: pod_when(core, namespace, "web", pod_ready), message="pod web Ready")
    assert running.status is not None
    published = {(running.status.pod_ip or "", 8080)}
    wait_for(lambda: ready_endpoints(kube_api, namespace, "web") == published, message="web in the slice")

    os.kill(container_pid(running), signal.SIGKILL)

    failed = wait_for(
        lambda: pod_when(core, namespace, "web", lambda p: pod_phase(p) == "Failed"),
        message="pod web Failed after its process was killed",
    )
    assert not pod_ready(failed)
    terminated = state(failed).terminated
    assert terminated is not None and terminated.exit_code == 128 + signal.SIGKILL
    wait_for(lambda: not ready_endpoints(kube_api, namespace, "web"), message="web gone from the slice")


def test_crashing_container_restarts_with_growing_count(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, pod("crash", [sys.executable, "-c", "import sys; sys.exit(3)"]))

    def backing_off(item: client.V1Pod) -> bool:
        waiting = state(item).waiting if container_status(item) else None
        return restarts(item) >= 2 and waiting is not None and waiting.reason == "CrashLoopBackOff"

    restarted = wait_for(
        lambda: pod_when(core, namespace, "crash", backing_off),
        timeout=30,
        message="two restarts of the crashing container, then a back-off",
    )
    assert last_terminated(restarted).exit_code == 3
    assert pod_phase(restarted) == "Running"  # restartPolicy Always: a crash loop is still Running
    assert not pod_ready(restarted)


def test_failing_liveness_probe_restarts_the_process(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    # Nothing listens on port 9: the probe fails and the kubelet restarts the container.
    liveness = {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}
    manifest = pod("sleeper", ["sleep", "600"], livenessProbe=liveness)
    assert manifest.spec is not None
    manifest.spec.termination_grace_period_seconds = 1
    core.create_namespaced_pod(namespace, manifest)
    first = wait_for(
        lambda: pod_when(
            core, namespace, "sleeper", lambda p: bool((s := container_status(p)) and s.container_id)
        ),
        message="the sleeper running",
    )
    first_pid = container_pid(first)
    restarted = wait_for(
        lambda: pod_when(core, namespace, "sleeper", lambda p: restarts(p) >= 1),
        timeout=30,
        message="a restart after the liveness probe failed",
    )
    assert "liveness probe failed" in (last_terminated(restarted).message or "")
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
    kube_api: client.ApiClient, namespace: str, image: str, command: list[str] | None, named: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, pod("odd", command, restart_policy="Never", image=image))

    failed = wait_for(
        lambda: pod_when(core, namespace, "odd", lambda p: pod_phase(p) == "Failed"),
        message="the pod with an unrunnable image Failed",
    )
    waiting = state(failed).waiting
    assert waiting is not None
    assert waiting.reason == "ImageNotRunnable"
    assert named in (waiting.message or "")


def test_deleted_pod_stops_its_process_then_disappears(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, pod("doomed", SERVE))
    running = wait_for(lambda: pod_when(core, namespace, "doomed", pod_ready), message="pod doomed Ready")
    pid = container_pid(running)

    core.delete_namespaced_pod("doomed", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("doomed", namespace)
        except client.ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for(gone, timeout=20, message="the deleted pod removed from the API")
    assert not process_exists(pid)


def test_pod_runs_as_the_user_its_security_context_names(
    kube_api: client.ApiClient, local_devcluster: DevCluster, namespace: str
) -> None:
    """Its processes, exec probes included, have the pod's uid, gid and groups (fsGroup,
    supplementalGroups); through fsGroup it reads a Secret of mode 0400 and owns what it writes in an
    emptyDir, as on a kubelet (pkg/volume/volume_linux.go)."""
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"key": "s3cret"}})
    report = (
        "echo ids $(id -u) $(id -g) groups $(id -G);"
        "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo;"
        "getent hosts kubernetes.default >/dev/null && echo resolves;"
        "cat /creds/key; echo; touch /scratch/made && stat -c 'made by %u:%g' /scratch/made;"
        "exec sleep 600"
    )
    manifest = pod(
        "nobody",
        ["sh", "-c", report],
        restart_policy="Never",
        securityContext={"privileged": False},
        volumeMounts=[{"name": "creds", "mountPath": "/creds"}, {"name": "scratch", "mountPath": "/scratch"}],
        readinessProbe={"exec": {"command": ["sh", "-c", "test $(id -u) = 65534"]}, "periodSeconds": 1},
    )
    assert manifest.spec is not None
    manifest.spec.security_context = client.V1PodSecurityContext(
        run_as_user=65534, run_as_group=65534, fs_group=4242, supplemental_groups=[4343]
    )
    manifest.spec.volumes = [
        client.V1Volume(
            name="creds", secret=client.V1SecretVolumeSource(secret_name="creds", default_mode=0o400)
        ),
        client.V1Volume(name="scratch", empty_dir=client.V1EmptyDirVolumeSource()),
    ]
    core.create_namespaced_pod(namespace, manifest)

    wait_for(
        lambda: pod_when(core, namespace, "nobody", pod_ready),
        message="the pod running as nobody Ready (its exec probe checks the uid)",
    )

    def report_done() -> str | None:
        logs = local_devcluster.pod_logs(namespace, "nobody")
        return logs if "made by" in logs else None

    logs = wait_for(report_done, timeout=10, message="the pod's report")
    assert logs.splitlines() == [
        "ids 65534 65534 groups 65534 4242 4343",
        namespace,
        "resolves",
        "s3cret",
        "made by 65534:4242",
    ], logs
