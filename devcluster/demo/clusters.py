"""Where the demo runs: a devcluster (``$KUBEBUILDER_ASSETS``) or, failing that, a kind cluster.

Both give the demo the same things: an admin kubeconfig, Helm values for the tandem image, and a
URL for a Service that this host can open. On a devcluster that URL is the Service's ClusterIP
(127.100.x.y), served by the devcluster's userspace kube-proxy; on kind it is a
``kubectl port-forward``.
"""

from __future__ import annotations

import re
import select
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import kubernetes.client
import kubernetes.config

from tandem.devcluster.assets import ASSETS_ENV
from tandem.devcluster.demo import DemoError
from tandem.devcluster.errors import DevClusterError

REPO_ROOT = Path(__file__).resolve().parents[2]
KIND_CLUSTER = "tandem-demo"
# Built locally and loaded into kind; `Never` pull, so a stale registry image cannot stand in.
KIND_IMAGE_REPOSITORY = "ghcr.io/tandem-dev/tandem"
KIND_IMAGE_TAG = "demo"
_PORT_FORWARD_LINE = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")
_PORT_FORWARD_TIMEOUT_S = 30.0

NO_CLUSTER = f"""no cluster to run the demo on. Either:
  - point {ASSETS_ENV} at a folder with etcd, kube-apiserver and kube-controller-manager
    (beside a Tandem clone: export {ASSETS_ENV}=$(devcluster/envtest/assets.sh); `make demo` does
    this by itself when ../shared/envtest/setup.sh exists). The devcluster runs pods as local
    processes and needs root (private mount namespaces for /etc/hosts and volumes); or
  - install kind (https://kind.sigs.k8s.io) and Docker, with the Docker daemon running: the demo
    then creates a kind cluster named {KIND_CLUSTER}, builds and loads the tandem image, and
    deletes the cluster when it ends."""


class DemoCluster(Protocol):
    @property
    def kubeconfig(self) -> Path: ...

    def api_client(self) -> kubernetes.client.ApiClient: ...

    def chart_values(self) -> dict[str, Any]:
        """Helm values this cluster needs (the image it can run)."""
        ...

    def service_url(self, namespace: str, service: str, port: int) -> str:
        """``http://host:port`` for a Service port, reachable from this host."""
        ...

    def stop(self) -> None: ...


class DevClusterTarget:
    """A devcluster owned by this process."""

    def __init__(self) -> None:
        from tandem.devcluster.cluster import DevCluster

        try:
            self._cluster = DevCluster().start()
        except DevClusterError as exc:
            raise DemoError(f"the devcluster did not start: {exc}") from exc

    @property
    def kubeconfig(self) -> Path:
        return self._cluster.kubeconfig

    def api_client(self) -> kubernetes.client.ApiClient:
        return self._cluster.api_client()

    def chart_values(self) -> dict[str, Any]:
        # The kubelet runs any image whose repository is `tandem` with this installation.
        return {}

    def service_url(self, namespace: str, service: str, port: int) -> str:
        with self.api_client() as api:
            spec = kubernetes.client.CoreV1Api(api).read_namespaced_service(service, namespace).spec
        if spec is None or not spec.cluster_ip or spec.cluster_ip == "None":
            raise DemoError(f"service {namespace}/{service} has no ClusterIP to reach it by")
        return f"http://{spec.cluster_ip}:{port}"

    def stop(self) -> None:
        self._cluster.stop()


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DemoError(f"`{' '.join(argv)}` failed ({result.returncode}):\n{result.stderr.strip()}")


class KindTarget:
    """A kind cluster made for the demo, with the tandem image built here and loaded into it."""

    def __init__(self) -> None:
        self._work_dir = Path(tempfile.mkdtemp(prefix="tandem-demo-"))
        self._kubeconfig = self._work_dir / "kubeconfig"
        self._forwards: list[subprocess.Popen[str]] = []
        image = f"{KIND_IMAGE_REPOSITORY}:{KIND_IMAGE_TAG}"
        _run(
            "kind",
            "create",
            "cluster",
            "--name",
            KIND_CLUSTER,
            "--kubeconfig",
            str(self._kubeconfig),
            "--wait",
            "120s",
        )
        try:
            _run(
                "docker",
                "build",
                "-f",
                str(REPO_ROOT / "images/tandem/Dockerfile"),
                "-t",
                image,
                str(REPO_ROOT),
            )
            _run("kind", "load", "docker-image", image, "--name", KIND_CLUSTER)
        except DemoError:
            self.stop()
            raise

    @property
    def kubeconfig(self) -> Path:
        return self._kubeconfig

    def api_client(self) -> kubernetes.client.ApiClient:
        api: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self._kubeconfig)
        )
        return api

    def chart_values(self) -> dict[str, Any]:
        return {"image": {"repository": KIND_IMAGE_REPOSITORY, "tag": KIND_IMAGE_TAG, "pullPolicy": "Never"}}

    def service_url(self, namespace: str, service: str, port: int) -> str:
        forward = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(self._kubeconfig), "-n", namespace, "port-forward",
             f"service/{service}", f":{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        self._forwards.append(forward)
        assert forward.stdout is not None
        # kubectl prints the local port it picked before it serves anything.
        ready, _, _ = select.select([forward.stdout], [], [], _PORT_FORWARD_TIMEOUT_S)
        line = forward.stdout.readline() if ready else "no answer from kubectl"
        match = _PORT_FORWARD_LINE.search(line)
        if match is None:
            raise DemoError(f"kubectl port-forward to {namespace}/{service} failed: {line.strip()}")
        return f"http://127.0.0.1:{match.group(1)}"

    def stop(self) -> None:
        for forward in self._forwards:
            forward.terminate()
            forward.wait(timeout=10)
        self._forwards.clear()
        subprocess.run(
            ["kind", "delete", "cluster", "--name", KIND_CLUSTER], capture_output=True, check=False
        )
        shutil.rmtree(self._work_dir, ignore_errors=True)


def _docker_running() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def kind_available() -> bool:
    return all(shutil.which(tool) for tool in ("kind", "docker", "kubectl")) and _docker_running()


def open_cluster(env: Mapping[str, str]) -> DemoCluster:
    """A devcluster when ``KUBEBUILDER_ASSETS`` is set, else kind when it can run, else DemoError."""
    if env.get(ASSETS_ENV):
        return DevClusterTarget()
    if kind_available():
        return KindTarget()
    raise DemoError(NO_CLUSTER)
