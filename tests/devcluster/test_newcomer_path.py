"""The newcomer's path works the first time: a devcluster, ``tandem operator`` as it comes, and
``kubectl apply -f examples/simulator-pool.yaml`` unmodified bring the pool to Ready, its processes
running as the images' uid (65532), which the operator's pods ask for as on any cluster.

The bug it pins: the devcluster ran pods as their ``runAsUser``, but that uid could not execute this
machine's interpreter (``Permission denied: .../bin/python3``, under ``/root``, mode 0700), so all
three pods crash-looped; only the demo and the e2e tests worked, by overriding ``runAsUser``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tandem.devcluster import DevCluster
from tandem.devcluster.demo.pool import EXAMPLE_POOL, wait_ready
from tandem.devcluster.testing import container_pid
from tandem.operator.settings import IMAGE_UID

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

READY_TIMEOUT_S = 180
KUBECTL = shutil.which("kubectl")


@pytest.fixture
def operator(
    local_devcluster: DevCluster, namespace: str, inferencepool_crd: object, tmp_path: Path
) -> Iterator[Path]:
    """``tandem operator`` with its defaults, but for what sharing the machine and the session's
    cluster needs: only this test's namespace, no fixed ports. Its log's path."""
    log = tmp_path / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(local_devcluster.kubeconfig),
        "TANDEM_OPERATOR_NAMESPACES": namespace,
        "TANDEM_OPERATOR_LIVENESS_PORT": "0",
        "TANDEM_OPERATOR_METRICS_PORT": "0",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("tandem")), "operator"], env=env, stdout=out, stderr=out
        )
    try:
        yield log
    finally:
        process.terminate()
        process.wait(timeout=60)


def kubectl(kubeconfig: Path, namespace: str, *args: str) -> None:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "-n", namespace, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def ids(pid: int) -> dict[str, list[int]]:
    """The ``Uid``, ``Gid`` and ``Groups`` lines of a process's /proc status."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {name: [int(value) for value in fields[name].split()] for name in ("Uid", "Gid", "Groups")}


@pytest.mark.skipif(KUBECTL is None, reason="the newcomer's path uses kubectl")
def test_the_example_pool_gets_ready_with_its_processes_as_the_image_uid(
    local_devcluster: DevCluster, kube_api: client.ApiClient, namespace: str, operator: Path
) -> None:
    kubeconfig = local_devcluster.kubeconfig
    kubectl(kubeconfig, namespace, "apply", "-f", str(EXAMPLE_POOL))
    try:
        wait_ready(kube_api, namespace, "sim-llama", READY_TIMEOUT_S)
        pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
        roles = sorted(
            (p.metadata.labels or {}).get("app.kubernetes.io/component", "") for p in pods if p.metadata
        )
        assert roles == ["decode", "prefill", "router"]
        for pod in pods:
            assert pod.spec is not None and pod.metadata is not None
            for container in pod.spec.containers:
                found = ids(container_pid(pod, container.name))
                assert found == {
                    "Uid": [IMAGE_UID] * 4,  # real, effective, saved, filesystem
                    "Gid": [IMAGE_UID] * 4,
                    "Groups": [IMAGE_UID],  # the pods' fsGroup
                }, f"{pod.metadata.name}/{container.name}"
    finally:
        kubectl(kubeconfig, namespace, "delete", "-f", str(EXAMPLE_POOL), "--wait", "--timeout=60s")
