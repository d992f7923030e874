"""One pod bound to the node: volumes, init containers, containers, and its status in the API.

The worker prepares the pod's volumes (retrying while a ConfigMap or Secret is missing), runs the
init containers one after the other, then starts every container. Whenever a container's status
changes it merge-patches the pod's ``status``; generated volumes are refreshed every
``volume_refresh`` seconds. ``stop`` ends every process (SIGTERM, SIGKILL after the grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from tandem.devcluster.containers import Backoff, ContainerRunner, RunnerSettings
from tandem.devcluster.dns import HostsFiles, PodHosts
from tandem.devcluster.env import (
    EnvError,
    PodFacts,
    container_argv,
    container_env,
    secret_text,
    service_link_env,
)
from tandem.devcluster.images import image_files, runnable_argv
from tandem.devcluster.launch import ContainerLaunch
from tandem.devcluster.layout import pod_directory
from tandem.devcluster.podstatus import ContainerStatus, PodSnapshot, Waiting, now, pod_status_json
from tandem.devcluster.services import Catalog
from tandem.devcluster.tasks import background
from tandem.devcluster.volumes import (
    PodVolumes,
    VolumeError,
    VolumeSources,
    config_map_bytes,
    secret_bytes,
)

log = logging.getLogger(__name__)

_MERGE_PATCH = "application/merge-patch+json"
_DEFAULT_GRACE = 30.0


@dataclass(frozen=True)
class NodeContext:
    """What every pod worker shares: the API, the node's facts, folders and services."""

    core: Any  # kubernetes_asyncio CoreV1Api
    node_name: str
    host_ip: str
    pods_dir: Path
    memory_dir: Path
    path_env: str
    backoff: Backoff
    volume_refresh: float
    hosts: HostsFiles
    catalog: Callable[[], Catalog]
    probe_poll: float | None  # NodeSettings.probe_poll_seconds


async def _maybe(read: Any) -> Any:
    """The object ``read`` fetches, or None when it does not exist."""
    try:
        return await read
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _security_field(name: str, container_context: Any, pod_context: Any) -> Any:
    """A securityContext field: the container's value, else the pod's (as Kubernetes merges them)."""
    for context in (container_context, pod_context):
        value = getattr(context, name, None) if context is not None else None
        if value is not None:
            return value
    return None


def supplemental_groups(pod_context: Any) -> list[int]:
    """The groups every container process of the pod gets besides its own: ``supplementalGroups``
    and ``fsGroup`` (as the kubelet hands them to the runtime)."""
    if pod_context is None:
        return []
    groups = list(pod_context.supplemental_groups or [])
    if pod_context.fs_group is not None and pod_context.fs_group not in groups:
        groups.append(pod_context.fs_group)
    return groups


def grace_seconds(pod: Any) -> float:
    """The grace period for stopping ``pod``'s processes."""
    if pod.metadata.deletion_grace_period_seconds is not None:
        return float(pod.metadata.deletion_grace_period_seconds)
    if pod.spec.termination_grace_period_seconds is not None:
        return float(pod.spec.termination_grace_period_seconds)
    return _DEFAULT_GRACE


class PodWorker:
    def __init__(self, pod: Any, pod_ip: str, node: NodeContext) -> None:
        self._pod = pod
        self.pod_ip = pod_ip
        self._node = node
        self.uid: str = pod.metadata.uid
        self._namespace: str = pod.metadata.namespace
        self._name: str = pod.metadata.name
        self.directory = pod_directory(node.pods_dir, self._namespace, self._name, self.uid)
        # In a folder of its own: podinit may cover the pod folder with a mirror (see mountns),
        # which would pin a file directly in it to the inode it had, and the rewrites would not show.
        self._hosts_file = self.directory / "network" / "hosts"
        context = pod.spec.security_context
        self._volumes = PodVolumes(
            self.directory, node.memory_dir / self.uid, fs_group=context.fs_group if context else None
        )
        self._start_time = now()
        self._init_statuses = [ContainerStatus(c.name, c.image) for c in pod.spec.init_containers or []]
        self._statuses = [ContainerStatus(c.name, c.image) for c in pod.spec.containers]
        self._initialized = not self._init_statuses
        self._runners: list[ContainerRunner] = []
        self._dirty = asyncio.Event()
        self._conditions: dict[str, tuple[str, str]] = {}
        self._run_task: asyncio.Task[None] | None = None
        self._publish_task: asyncio.Task[None] | None = None
        self.terminating = False
        self._tokens: dict[tuple[str | None, int], tuple[float, str]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        spec = self._pod.spec
        self._node.hosts.add(
            self.uid,
            PodHosts(
                path=self._hosts_file,
                namespace=self._namespace,
                pod_ip=self.pod_ip,
                hostname=(spec.hostname or self._name)[:63],
                subdomain=spec.subdomain,
            ),
        )
        self._publish_task = background(self._publish(), name=f"status {self._namespace}/{self._name}")
        self._run_task = background(self._run(), name=f"pod {self._namespace}/{self._name}")
        self._dirty.set()

    def update(self, pod: Any) -> None:
        self._pod = pod

    @property
    def grace(self) -> float:
        """The grace period the pod asks for when its processes are stopped."""
        return grace_seconds(self._pod)

    async def stop(self, grace: float) -> None:
        """Stop all processes (SIGTERM, then SIGKILL after ``grace``) and the worker's tasks."""
        self.terminating = True
        if self._run_task is not None:
            self._run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task
        await asyncio.gather(*(runner.stop(grace) for runner in self._runners))
        if self._publish_task is not None:
            self._publish_task.cancel()
        self._node.hosts.remove(self.uid)
        self._volumes.remove()

    # -- running ----------------------------------------------------------------------------

    def _changed(self) -> None:
        self._dirty.set()

    async def _run(self) -> None:
        spec = self._pod.spec
        await self._prepare_volumes()
        for container, status in zip(spec.init_containers or [], self._init_statuses, strict=True):
            runner = self._runner(container, status, init=True)
            runner.start()
            await runner.wait()
            if not runner.succeeded:
                return
        self._initialized = True
        self._changed()
        for container, status in zip(spec.containers, self._statuses, strict=True):
            self._runner(container, status, init=False).start()
        while True:
            await asyncio.sleep(self._node.volume_refresh)
            try:
                await self._volumes.prepare(spec.volumes or [], self._facts(), self._sources())
            except (VolumeError, ApiException) as exc:
                log.info("pod %s/%s: volume refresh failed: %s", self._namespace, self._name, exc)

    async def _prepare_volumes(self) -> None:
        while True:
            try:
                await self._volumes.prepare(self._pod.spec.volumes or [], self._facts(), self._sources())
                return
            except (VolumeError, ApiException) as exc:
                message = (
                    f"MountVolume: {exc}"
                    if isinstance(exc, VolumeError)
                    else f"MountVolume: API {exc.status}"
                )
                for status in [*self._init_statuses, *self._statuses]:
                    status.state = Waiting("ContainerCreating", message)
                self._changed()
            await asyncio.sleep(2.0)

    def _runner(self, container: Any, status: ContainerStatus, init: bool) -> ContainerRunner:
        settings = RunnerSettings(
            restart_policy=self._pod.spec.restart_policy or "Always",
            init=init,
            grace=grace_seconds(self._pod),
            backoff=self._node.backoff,
            pod_ip=self.pod_ip,
            launch_file=self.directory / "launch" / f"{container.name}.json",
            log=self.directory / f"{container.name}.log",
            probe_poll=self._node.probe_poll,
        )

        async def prepare() -> ContainerLaunch:
            return await self._launch(container)

        runner = ContainerRunner(container, status, settings, prepare, self._changed)
        self._runners.append(runner)
        return runner

    # -- inputs -----------------------------------------------------------------------------

    def _facts(self) -> PodFacts:
        pod = self._pod
        return PodFacts(
            name=self._name,
            namespace=self._namespace,
            uid=self.uid,
            service_account=pod.spec.service_account_name or "default",
            node_name=self._node.node_name,
            pod_ip=self.pod_ip,
            host_ip=self._node.host_ip,
            labels=pod.metadata.labels or {},
            annotations=pod.metadata.annotations or {},
        )

    def _sources(self) -> VolumeSources:
        core = self._node.core
        namespace = self._namespace

        async def config_map(name: str) -> dict[str, bytes] | None:
            found = await _maybe(core.read_namespaced_config_map(name, namespace))
            return None if found is None else config_map_bytes(found)

        async def secret(name: str) -> dict[str, bytes] | None:
            found = await _maybe(core.read_namespaced_secret(name, namespace))
            return None if found is None else secret_bytes(found)

        async def token(audience: str | None, expiration: int) -> str:
            issued_at, issued = self._tokens.get((audience, expiration), (0.0, ""))
            # Renewed at 80% of its lifetime, as the kubelet does.
            if issued and time.monotonic() - issued_at < 0.8 * expiration:
                return issued
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [audience] if audience else None,
                    "expirationSeconds": expiration,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": self._name,
                        "uid": self.uid,
                    },
                },
            }
            account = self._facts().service_account
            response = await core.create_namespaced_service_account_token(account, namespace, body)
            self._tokens[(audience, expiration)] = (time.monotonic(), str(response.status.token))
            return str(response.status.token)

        return VolumeSources(config_map=config_map, secret=secret, token=token)

    async def _referenced(
        self, container: Any
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        """The ConfigMaps and Secrets ``container``'s environment refers to, as text by name."""
        config_map_names = {s.config_map_ref.name for s in container.env_from or [] if s.config_map_ref}
        secret_names = {s.secret_ref.name for s in container.env_from or [] if s.secret_ref}
        for variable in container.env or []:
            source = variable.value_from
            if source is not None and source.config_map_key_ref is not None:
                config_map_names.add(source.config_map_key_ref.name)
            if source is not None and source.secret_key_ref is not None:
                secret_names.add(source.secret_key_ref.name)
        core = self._node.core
        config_maps: dict[str, dict[str, str]] = {}
        for name in config_map_names:
            found = await _maybe(core.read_namespaced_config_map(name, self._namespace))
            if found is not None:
                config_maps[name] = dict(found.data or {})
        secrets: dict[str, dict[str, str]] = {}
        for name in secret_names:
            found = await _maybe(core.read_namespaced_secret(name, self._namespace))
            decoded = secret_text(found.data or {}) if found is not None else None
            if decoded is not None:
                secrets[name] = decoded
        return config_maps, secrets

    async def _launch(self, container: Any) -> ContainerLaunch:
        spec = self._pod.spec
        try:
            config_maps, secrets = await self._referenced(container)
        except ApiException as exc:
            raise EnvError(
                f"cannot read the ConfigMaps and Secrets the environment names: {exc.status}"
            ) from exc
        hostname = (spec.hostname or self._name)[:63]
        run_as_user = _security_field("run_as_user", container.security_context, spec.security_context)
        run_as_group = _security_field("run_as_group", container.security_context, spec.security_context)
        base = {
            "PATH": self._node.path_env,
            "HOME": "/root" if not run_as_user else "/",
            "HOSTNAME": hostname,
        }
        links = self._node.catalog().links(self._namespace, spec.enable_service_links is not False)
        base.update(service_link_env(links))
        env = container_env(container, self._facts(), base, config_maps.get, secrets.get)
        argv = runnable_argv(
            container.image,
            container_argv(container.command, container.args, env),
            has_command=bool(container.command),
            which=lambda program: shutil.which(program, path=env.get("PATH")),
            python=sys.executable,
        )
        working_dir = container.working_dir
        if not working_dir:
            default = self.directory / "work" / container.name
            default.mkdir(parents=True, exist_ok=True)
            if run_as_user is not None:
                os.chown(default, run_as_user, run_as_group if run_as_group is not None else -1)
            working_dir = str(default)
        return ContainerLaunch(
            argv=argv,
            env=env,
            working_dir=working_dir,
            hostname=hostname,
            hosts_file=str(self._hosts_file),
            scratch=str(self.directory / "scratch" / container.name),
            mounts=self._volumes.mounts(container, env),
            image_files=list(image_files(container.image)),
            run_as_user=run_as_user,
            run_as_group=run_as_group,
            supplemental_groups=supplemental_groups(spec.security_context),
        )

    # -- status -----------------------------------------------------------------------------

    async def _publish(self) -> None:
        core = self._node.core
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.terminating:
                continue
            snapshot = PodSnapshot(
                restart_policy=self._pod.spec.restart_policy or "Always",
                pod_ip=self.pod_ip,
                host_ip=self._node.host_ip,
                start_time=self._start_time,
                initialized=self._initialized,
                containers=self._statuses,
                init_containers=self._init_statuses,
            )
            status = pod_status_json(snapshot, self._conditions)
            try:
                await core.patch_namespaced_pod_status(
                    self._name, self._namespace, {"status": status}, _content_type=_MERGE_PATCH
                )
            except ApiException as exc:
                if exc.status == 404:
                    return
                log.warning("pod %s/%s: status update failed: %s", self._namespace, self._name, exc.reason)
                await asyncio.sleep(1.0)
                self._dirty.set()
                continue
            self._conditions = {
                c["type"]: (c["status"], c["lastTransitionTime"]) for c in status["conditions"]
            }
