"""What a devcluster container sees: volumes at their mount paths (even where the host lacks the
parent folders, without changing the host), and its environment as Kubernetes builds it."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
from kubernetes import client

from tandem.devcluster.testing import ClusterUnderTest, finished_phase, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_devcluster")]

REPORT = textwrap.dedent(
    """
    import os, sys
    def show(path):
        print(path, "=", open(path).read().strip(), flush=True)
    show("/etc/lmcache/config.yaml")
    show("/opt/tandem-devcluster-test/conf/mode")
    show("/models/tandem-devcluster-test/token/api-key")
    open("/dev/shm/scratch", "w").write("in memory")
    show("/dev/shm/scratch")
    for name in ("MODE", "API_KEY", "FROM_ENV_FROM", "PREFIXED_mode", "POD_NAME", "POD_NAMESPACE",
                 "ACCOUNT", "HOST_IP", "TANDEM_BIND_HOST", "POD_IP", "GREETING"):
        print(name, "=", os.environ.get(name), flush=True)
    print("ARGS", "=", " ".join(sys.argv[1:]), flush=True)
    """
)

HOST_PATHS = ("/etc/lmcache", "/opt/tandem-devcluster-test", "/models/tandem-devcluster-test")


def test_container_sees_volumes_and_environment(
    kube_api: client.ApiClient, devcluster: ClusterUnderTest, namespace: str
) -> None:
    if any(Path(path).exists() for path in HOST_PATHS):
        pytest.skip("this machine already has one of the test's mount paths")
    core = client.CoreV1Api(kube_api)
    settings = {"config.yaml": "chunk_size: 256", "mode": "fast"}
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data=settings)
    )
    creds = {"api-key": base64.b64encode(b"s3cret").decode()}
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), data=creds)
    )
    env = [
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "api-key"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "value": "hello $(POD_NAME) in $$(literal)"},
    ]
    manifest = {
        "metadata": {"name": "reader"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "creds", "secret": {"secretName": "creds"}},
                {"name": "shm", "emptyDir": {"medium": "Memory"}},
            ],
            "containers": [
                {
                    "name": "read",
                    "image": "ghcr.io/tandem-dev/tandem:0.1.0",
                    "command": ["python3", "-c", REPORT],
                    "args": ["--mode=$(MODE)", "--pod=$(POD_NAME)"],
                    "env": env,
                    "envFrom": [
                        {"configMapRef": {"name": "settings"}, "prefix": "PREFIXED_"},
                    ],
                    "volumeMounts": [
                        {
                            "name": "settings",
                            "mountPath": "/etc/lmcache/config.yaml",
                            "subPath": "config.yaml",
                        },
                        {"name": "settings", "mountPath": "/opt/tandem-devcluster-test/conf"},
                        {"name": "creds", "mountPath": "/models/tandem-devcluster-test/token"},
                        {"name": "shm", "mountPath": "/dev/shm"},
                    ],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, client.V1Pod.model_validate(manifest))

    phase = wait_for(
        lambda: finished_phase(core.read_namespaced_pod("reader", namespace)),
        timeout=60,
        message="the reader pod to finish",
    )
    logs = devcluster.pod_logs(namespace, "reader")
    assert phase == "Succeeded", logs
    status = core.read_namespaced_pod("reader", namespace).status
    pod_ip = status.pod_ip if status else None
    expected = [
        "/etc/lmcache/config.yaml = chunk_size: 256",
        "/opt/tandem-devcluster-test/conf/mode = fast",
        "/models/tandem-devcluster-test/token/api-key = s3cret",
        "/dev/shm/scratch = in memory",
        "MODE = fast",
        "API_KEY = s3cret",
        "PREFIXED_mode = fast",
        "POD_NAME = reader",
        f"POD_NAMESPACE = {namespace}",
        "ACCOUNT = default",
        "HOST_IP = 127.0.0.1",
        f"TANDEM_BIND_HOST = {pod_ip}",
        f"POD_IP = {pod_ip}",
        "GREETING = hello reader in $(literal)",
        "ARGS = --mode=fast --pod=reader",
    ]
    for line in expected:
        assert line in logs.splitlines(), f"{line!r} not in:\n{logs}"
    assert not any(Path(path).exists() for path in HOST_PATHS), "the host's filesystem changed"
    assert not Path("/dev/shm/scratch").exists()


WATCH_CONFIG = textwrap.dedent(
    """
    import time
    path = "/etc/tandem-devcluster-test/settings/mode"
    print("mode", open(path).read(), flush=True)
    deadline = time.monotonic() + 30
    while open(path).read() == "fast" and time.monotonic() < deadline:
        time.sleep(0.2)
    print("mode", open(path).read(), flush=True)
    """
)


def test_updated_config_map_reaches_the_running_container(
    kube_api: client.ApiClient, devcluster: ClusterUnderTest, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    config_map = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"mode": "fast"})
    core.create_namespaced_config_map(namespace, config_map)
    manifest = {
        "metadata": {"name": "watcher"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "settings", "configMap": {"name": "settings"}}],
            "containers": [
                {
                    "name": "watch",
                    "image": "ghcr.io/tandem-dev/tandem:0.1.0",
                    "command": ["python3", "-c", WATCH_CONFIG],
                    "volumeMounts": [
                        {"name": "settings", "mountPath": "/etc/tandem-devcluster-test/settings"}
                    ],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, client.V1Pod.model_validate(manifest))
    wait_for(lambda: "mode fast" in devcluster.pod_logs(namespace, "watcher"), message="the watcher reading")

    core.patch_namespaced_config_map("settings", namespace, {"data": {"mode": "careful"}})

    phase = wait_for(
        lambda: finished_phase(core.read_namespaced_pod("watcher", namespace)),
        timeout=40,
        message="the watcher to see the update",
    )
    assert phase == "Succeeded"
    assert devcluster.pod_logs(namespace, "watcher").splitlines() == ["mode fast", "mode careful"]
