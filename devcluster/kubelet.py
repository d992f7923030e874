"""The visible part of a kubelet, plus the scheduler's one job: binding pods to the node.

- Registers a Ready Node with allocatable ``nvidia.com/gpu`` (so GPU pods are accepted), CPU and
  memory of this machine. No heartbeats: the node-lifecycle controller is off.
- Scheduling is loose: every pending pod is bound to the node unless its ``nodeSelector`` names a
  label the node lacks (then it stays Pending with ``PodScheduled=False``, reason
  ``Unschedulable``; set node labels to match). The node has no taints, so tolerations never
  matter; affinity and resource requests are not checked.
- Bound pods get a ``PodWorker`` (see there). A pod with a ``deletionTimestamp`` is stopped
  (SIGTERM, SIGKILL after its grace period) and then deleted with grace 0, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from tandem.devcluster.network import PodAddresses
from tandem.devcluster.podstatus import now, timestamp
from tandem.devcluster.podworker import NodeContext, PodWorker, grace_seconds
from tandem.devcluster.tasks import background

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
_MERGE_PATCH = "application/merge-patch+json"
# When the whole cluster stops, pods get at most this long to exit after SIGTERM.
_SHUTDOWN_GRACE = 5.0


@dataclass(frozen=True)
class NodeShape:
    """The node as the API sees it."""

    name: str
    gpus: int
    labels: Mapping[str, str] = field(default_factory=dict)


def node_labels(shape: NodeShape) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": shape.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64" if platform.machine() == "x86_64" else platform.machine(),
        **shape.labels,
    }


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def node_manifest(shape: NodeShape, host_ip: str) -> dict[str, Any]:
    """The Node object, status included (the status is written through its subresource)."""
    resources = {
        "cpu": str(os.cpu_count() or 1),
        "memory": str(_memory_bytes()),
        "pods": "110",
        "ephemeral-storage": "100Gi",
        GPU_RESOURCE: str(shape.gpus),
    }
    moment = timestamp(now())
    conditions = [
        {"type": kind, "status": "False", "reason": f"Kubelet{reason}", "message": "devcluster"}
        for kind, reason in (
            ("MemoryPressure", "HasSufficientMemory"),
            ("DiskPressure", "HasNoDiskPressure"),
            ("PIDPressure", "HasSufficientPID"),
        )
    ]
    conditions.append(
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "devcluster kubelet"}
    )
    for condition in conditions:
        condition.update(lastHeartbeatTime=moment, lastTransitionTime=moment)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": shape.name, "labels": node_labels(shape)},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": host_ip},
                {"type": "Hostname", "address": shape.name},
            ],
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "tandem devcluster",
                "containerRuntimeVersion": "process://",
                "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux",
                "architecture": node_labels(shape)["kubernetes.io/arch"],
            },
        },
    }


def unmatched_selector(pod: Any, labels: Mapping[str, str]) -> dict[str, str]:
    """The entries of ``pod``'s nodeSelector that ``labels`` do not satisfy."""
    selector = pod.spec.node_selector or {}
    return {key: value for key, value in selector.items() if labels.get(key) != value}


class Kubelet:
    def __init__(self, shape: NodeShape, node: NodeContext, addresses: PodAddresses) -> None:
        self._shape = shape
        self._node = node
        self._core = node.core
        self._labels = node_labels(shape)
        self._addresses = addresses
        self._workers: dict[tuple[str, str], PodWorker] = {}
        self._queue: asyncio.Queue[tuple[tuple[str, str], Any]] = asyncio.Queue()
        self._unschedulable: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()

    async def register(self) -> None:
        manifest = node_manifest(self._shape, self._node.host_ip)
        status = manifest.pop("status")
        with contextlib.suppress(ApiException):
            await self._core.delete_node(self._shape.name)
        await self._core.create_node(manifest)
        await self._core.patch_node_status(self._shape.name, {"status": status}, _content_type=_MERGE_PATCH)

    def on_pod_event(self, kind: str, pod: Any) -> None:
        """Informer callback: queue the pod's latest state (None once deleted)."""
        key = (pod.metadata.namespace, pod.metadata.name)
        self._queue.put_nowait((key, None if kind == "DELETED" else pod))

    async def run(self) -> None:
        while True:
            key, pod = await self._queue.get()
            try:
                await self._sync(key, pod)
            except ApiException as exc:
                log.warning("pod %s/%s: %s %s", key[0], key[1], exc.status, exc.reason)
            except Exception:
                # One pod the kubelet cannot handle must not stop it handling the others.
                log.exception("pod %s/%s: cannot sync", key[0], key[1])

    async def stop(self) -> None:
        """Stop every pod's processes: SIGTERM, SIGKILL after ``_SHUTDOWN_GRACE`` at most."""
        workers = list(self._workers.values())
        self._workers.clear()
        await asyncio.gather(*(worker.stop(_SHUTDOWN_GRACE) for worker in workers))
        # Pods being retired already have their processes stopping; let them finish.
        if self._background:
            await asyncio.wait(self._background, timeout=_SHUTDOWN_GRACE)
        for task in self._background:
            task.cancel()

    async def _sync(self, key: tuple[str, str], pod: Any) -> None:
        worker = self._workers.get(key)
        if worker is not None and (pod is None or pod.metadata.uid != worker.uid):
            # Gone from the API (or replaced by a namesake): its processes go too.
            del self._workers[key]
            self._retire(key, worker, worker.grace, delete=None)
            worker = None
        if pod is None:
            return
        if not pod.spec.node_name:
            if pod.metadata.deletion_timestamp is None:
                await self._schedule(pod)
            return
        if pod.spec.node_name != self._shape.name:
            return
        if pod.metadata.deletion_timestamp is not None:
            if worker is None:
                await self._delete(pod)
            else:
                self._retire(key, worker, grace_seconds(pod), delete=pod)
            return
        if worker is None:
            worker = PodWorker(pod, self._addresses.allocate(), self._node)
            self._workers[key] = worker
            worker.start()
        else:
            worker.update(pod)

    def _retire(self, key: tuple[str, str], worker: PodWorker, grace: float, delete: Any) -> None:
        """Stop ``worker``'s pod in the background (once), then delete the pod ``delete`` if given."""
        if worker.terminating:
            return
        worker.terminating = True

        async def retire() -> None:
            await worker.stop(grace)
            self._addresses.release(worker.pod_ip)
            if self._workers.get(key) is worker:
                del self._workers[key]
            if delete is not None:
                await self._delete(delete)

        task = background(retire(), name=f"retire {key[0]}/{key[1]}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _delete(self, pod: Any) -> None:
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod.metadata.uid}}
        try:
            await self._core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def _schedule(self, pod: Any) -> None:
        missing = unmatched_selector(pod, self._labels)
        if missing:
            if pod.metadata.uid not in self._unschedulable:
                self._unschedulable.add(pod.metadata.uid)
                await self._mark_unschedulable(pod, missing)
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.metadata.name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self._shape.name},
        }
        try:
            await self._core.create_namespaced_pod_binding(
                pod.metadata.name, pod.metadata.namespace, binding, _preload_content=False
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def _mark_unschedulable(self, pod: Any, missing: Mapping[str, str]) -> None:
        wanted = ", ".join(f"{key}={value}" for key, value in sorted(missing.items()))
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": f"0/1 nodes are available: node {self._shape.name} lacks labels {wanted} "
            "(DevCluster(node_labels=...) or `tandem devcluster up --node-label`)",
            "lastTransitionTime": timestamp(now()),
        }
        await self._core.patch_namespaced_pod_status(
            pod.metadata.name,
            pod.metadata.namespace,
            {"status": {"conditions": [condition]}},
            _content_type=_MERGE_PATCH,
        )
