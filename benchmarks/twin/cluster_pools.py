"""The devcluster side of the cluster twin: a cluster, the operator, and simulator pools on it.

:class:`TwinCluster` starts a devcluster (``$KUBEBUILDER_ASSETS``; pods are local processes),
installs the InferencePool CRD, runs ``tandem operator`` as its own process on one namespace, and
applies pools. Each pool is an InferencePool of ``engine.type: simulator``: the operator plans it
and renders ``tandem sim`` engines whose timing flags are the plan's, plus ``--speed`` (from
``engine.extraArgs``) when the clock is compressed. Traffic goes to the router pod's own address,
not the Service's ClusterIP (the devcluster's userspace proxy would add its CPU to every token).

:func:`pool_manifest` writes a twin workload (sim/twin.py's ``Workload``) as such a pool, with the
overrides each way of serving needs (mode, threshold, replicas, autoscaling).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from kubernetes.client.exceptions import ApiException

from tandem.api import GROUP, PLURAL, VERSION, InferencePoolStatus
from tandem.api.resource import POOL_LABEL, ROLE_LABEL
from tandem.devcluster.cluster import DevCluster
from tandem.devcluster.demo import pool as demo_pool
from tandem.devcluster.settings import NodeSettings
from tandem.sim.twin import Workload

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "tandem.dev_inferencepools.yaml"
NAMESPACE = "twin"
ROUTER_PORT = 8000
READY_TIMEOUT_S = 240.0
# Long enough for the code workload's log-normal tail (p90 12k tokens) plus its output.
MAX_MODEL_LEN = 32768
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def pool_manifest(
    name: str, workload: Workload, *, speed: float, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The workload as a simulator InferencePool; ``spec`` sections are merged over the defaults."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferencePool",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": workload.model, "maxModelLen": MAX_MODEL_LEN},
            "engine": {"type": "simulator", "extraArgs": ["--speed", f"{speed:g}"]},
            "accelerator": {"type": workload.gpu, "gpusPerNode": 8},
            "slo": {"ttftMs": workload.ttft_ms, "itlMs": workload.itl_ms},
            "workload": {
                "requestsPerSecond": workload.rps,
                "promptTokens": {"mean": workload.prompt_tokens, "p90": workload.prompt_p90},
                "outputTokens": {"mean": workload.output_tokens},
            },
            "disaggregation": {"mode": "Auto", "promptTokensThreshold": "auto"},
        },
    }
    for section, values in (spec or {}).items():
        current = body["spec"].get(section)
        body["spec"][section] = {**current, **values} if isinstance(current, dict) else values
    return body


@dataclass(frozen=True)
class PoolProcess:
    """One pod of a pool as a local process."""

    pod: str
    role: str  # prefill, decode or router
    pid: int


class TwinCluster:
    """A devcluster with the CRD and the operator; ``with TwinCluster.started(work) as cluster:``."""

    def __init__(self, cluster: DevCluster, operator: subprocess.Popen[bytes]) -> None:
        self.cluster = cluster
        self._operator = operator
        self.api = cluster.api_client()
        self.core = kubernetes.client.CoreV1Api(self.api)

    @classmethod
    @contextmanager
    def started(cls, work_dir: Path, probe_poll: float | None = None) -> Iterator[TwinCluster]:
        """``probe_poll``: the node's ``probe_poll_seconds`` (None: Kubernetes' probe timing)."""
        work_dir.mkdir(parents=True, exist_ok=True)
        node = NodeSettings(probe_poll_seconds=probe_poll)
        cluster = DevCluster(work_dir=work_dir / "devcluster", node=node).start()
        try:
            with cluster.api_client() as api:
                _install_crd(api)
                namespace = kubernetes.client.V1Namespace(
                    metadata=kubernetes.client.V1ObjectMeta(name=NAMESPACE)
                )
                kubernetes.client.CoreV1Api(api).create_namespace(namespace)
            with (work_dir / "operator.log").open("ab") as log:
                operator = subprocess.Popen(
                    [
                        sys.executable, "-m", "tandem.cli", "operator", "-n", NAMESPACE,
                        "--kubeconfig", str(cluster.kubeconfig),
                        "--liveness-port", "0", "--metrics-port", "0",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a CPU group of its own, apart from the load client's
                )  # fmt: skip
            twin = cls(cluster, operator)
            try:
                yield twin
            finally:
                twin.close()
        finally:
            cluster.stop(remove_work_dir=False)

    def close(self) -> None:
        self._operator.terminate()
        try:
            self._operator.wait(30)
        except subprocess.TimeoutExpired:
            self._operator.kill()
            self._operator.wait()
        self.api.close()

    def apply(self, manifest: dict[str, Any], say: Any = print) -> InferencePoolStatus:
        """Create the pool and wait until it is Ready; its status (the plan) when it is."""
        self._check_operator()
        name = manifest["metadata"]["name"]
        demo_pool.apply(self.api, NAMESPACE, manifest)
        return demo_pool.wait_ready(self.api, NAMESPACE, name, READY_TIMEOUT_S, lambda line: say("  " + line))

    def status(self, name: str) -> InferencePoolStatus | None:
        return demo_pool.read_status(self.api, NAMESPACE, name)

    def delete(self, name: str) -> None:
        """Delete the pool and wait until its pods are gone (their CPU is not the next pool's)."""
        objects = kubernetes.client.CustomObjectsApi(self.api)
        try:
            objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + 120
        while self._pods(name) and time.monotonic() < deadline:
            time.sleep(1)

    def _pods(self, name: str) -> list[kubernetes.client.V1Pod]:
        pods: list[kubernetes.client.V1Pod] = self.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"{POOL_LABEL}={name}"
        ).items
        return pods

    def router_url(self, name: str) -> str:
        """``http://<router pod IP>:8000``: the pool's router, reached without the Service proxy."""
        for pod in self._pods(name):
            if _role(pod) == "router" and pod.status and pod.status.pod_ip:
                return f"http://{pod.status.pod_ip}:{ROUTER_PORT}"
        raise RuntimeError(f"pool {name} has no router pod with an address")

    def processes(self, name: str) -> list[PoolProcess]:
        """The running pods of the pool and their processes (``containerID: process://<pid>``)."""
        found = []
        for pod in self._pods(name):
            statuses = (pod.status.container_statuses if pod.status else None) or []
            for status in statuses:
                scheme, _, pid = (status.container_id or "").partition("://")
                if scheme == "process" and status.state and status.state.running:
                    found.append(PoolProcess(str(pod.metadata and pod.metadata.name), _role(pod), int(pid)))
        return found

    def prioritize(self, name: str, niceness: int) -> list[PoolProcess]:
        """Set every thread of the pool's processes to ``niceness``; the processes."""
        found = self.processes(name)
        for process in found:
            renice(process.pid, niceness)
        return found

    def _check_operator(self) -> None:
        if self._operator.poll() is not None:
            raise RuntimeError(f"the operator exited ({self._operator.returncode}); see operator.log")


def renice(pid: int, niceness: int) -> int:
    """Give ``pid`` the CPU weight of ``niceness``; its niceness before. Where the kernel groups
    processes by session (``sched_autogroup_enabled``; each pod is a session of its own) the weight
    is the group's, set in ``/proc/PID/autogroup``; elsewhere (or where the group file is empty or
    cannot be written, as in some containers) it is each thread's own niceness."""
    group = Path(f"/proc/{pid}/autogroup")
    before = _group_niceness(group) if _autogroups() else None
    if before is not None:
        with contextlib.suppress(OSError):
            group.write_text(str(niceness))
            return before
    before = os.getpriority(os.PRIO_PROCESS, pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)
    return before


def _autogroups() -> bool:
    with contextlib.suppress(OSError):
        return AUTOGROUP.read_text().strip() == "1"
    return False


def _group_niceness(group: Path) -> int | None:
    """The niceness in a ``/proc/PID/autogroup`` line (``/autogroup-7 nice 0``); None if absent."""
    with contextlib.suppress(OSError):
        found = re.search(r"\bnice\s+(-?\d+)", group.read_text())
        return int(found.group(1)) if found else None
    return None


@contextmanager
def reniced(niceness: int) -> Iterator[None]:
    """This process (the load client) at ``niceness`` meanwhile (its session's, with autogroups)."""
    before = renice(os.getpid(), niceness)
    try:
        yield
    finally:
        renice(os.getpid(), before)


def _role(pod: kubernetes.client.V1Pod) -> str:
    labels = (pod.metadata.labels if pod.metadata else None) or {}
    return str(labels.get(ROLE_LABEL) or "router")


def _install_crd(api: kubernetes.client.ApiClient) -> None:
    manifest = yaml.safe_load(CRD_FILE.read_text())
    extensions = kubernetes.client.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(manifest)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = extensions.read_custom_resource_definition(manifest["metadata"]["name"]).status
        conditions = (status.conditions if status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.5)
    raise RuntimeError("the InferencePool CRD did not become Established")
