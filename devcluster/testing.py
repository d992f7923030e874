"""Pytest fixtures for tests against a real Kubernetes API (loaded by the repository's conftest.py).

- ``devcluster`` (session): a running cluster (``ClusterUnderTest``): a ``DevCluster`` started from
  ``$KUBEBUILDER_ASSETS``, or, when ``TANDEM_TEST_KUBECONFIG`` names a kubeconfig, that existing
  cluster (kind, ...) as is. Without the control-plane programs it skips, saying what is missing
  and naming ``KUBEBUILDER_ASSETS``; with ``CI=true`` it fails instead.
- ``local_devcluster`` (session): the ``DevCluster`` itself, for tests of its own behaviour; they
  skip on a ``TANDEM_TEST_KUBECONFIG`` cluster.
- ``kube_api`` (session): an admin ``kubernetes.client.ApiClient`` for it.
- ``namespace`` (function): a fresh namespace, unique per test, whose ``default`` ServiceAccount
  can already be used by pods; deleted after the test.
- ``wait_for(predicate, timeout, interval, message)``: poll until ``predicate()`` is truthy (and
  return it), else fail the test with ``message``.
- ``crd_established(api, name)``, ``delete_crd(api, name)``: a CRD's resources served; a CRD
  deleted and gone.
- ``ready_endpoints(api, namespace, service)``: the ``(ip, port)`` pairs a Service's EndpointSlices
  (``v1``, else ``v1beta1``) list as ready; ``container_pid(pod)``: the local pid behind a
  devcluster container (its ``containerID`` is ``process://<pid>``); ``pod_ready``, ``pod_phase``,
  ``finished_phase`` and ``container_status`` read a ``V1Pod`` without tripping over its optional
  fields.

Mark tests that use them ``@pytest.mark.cluster``.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import kubernetes.client
import kubernetes.config
import pytest
from kubernetes.client import ApiException

from tandem.devcluster.errors import AssetsMissingError

if TYPE_CHECKING:
    from tandem.devcluster.cluster import DevCluster

KUBECONFIG_ENV = "TANDEM_TEST_KUBECONFIG"
_T = TypeVar("_T")


class ClusterUnderTest(Protocol):
    """What tests may rely on, whichever cluster runs them."""

    @property
    def kubeconfig(self) -> Path: ...

    def api_client(self) -> kubernetes.client.ApiClient: ...

    def pod_logs(self, namespace: str, name: str, container: str | None = None) -> str: ...


class ExistingCluster:
    """A cluster named by a kubeconfig (``TANDEM_TEST_KUBECONFIG``); logs come from the API."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def api_client(self) -> kubernetes.client.ApiClient:
        configuration = kubernetes.client.Configuration()
        # kubernetes.config has no type annotations.
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        return kubernetes.client.ApiClient(configuration)

    def pod_logs(self, namespace: str, name: str, container: str | None = None) -> str:
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            pod = core.read_namespaced_pod(name, namespace)
            names = [container] if container else [c.name for c in pod.spec.containers] if pod.spec else []
            return "".join(core.read_namespaced_pod_log(name, namespace, container=n) for n in names)


def wait_for(
    predicate: Callable[[], _T | None],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
) -> _T:
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` after ``timeout``
    seconds. API errors (a 404 before an object exists) count as "not yet"; the last one is shown."""
    deadline = time.monotonic() + timeout
    last_error: ApiException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except ApiException as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f"; last API error: {last_error.status} {last_error.reason}" if last_error else ""
            pytest.fail(f"{message} (timed out after {timeout:g}s{detail})")
        time.sleep(interval)


def ready_endpoints(api: kubernetes.client.ApiClient, namespace: str, service: str) -> set[tuple[str, int]]:
    """The ready (address, port) pairs of ``service``'s EndpointSlices."""
    groups = kubernetes.client.ApisApi(api).get_api_versions().groups
    served = {v.version for g in groups if g.name == "discovery.k8s.io" for v in g.versions}
    slices: Any = kubernetes.client.CustomObjectsApi(api).list_namespaced_custom_object(
        "discovery.k8s.io",
        "v1" if "v1" in served else "v1beta1",
        namespace,
        "endpointslices",
        label_selector=f"kubernetes.io/service-name={service}",
    )
    found: set[tuple[str, int]] = set()
    for endpoint_slice in slices["items"]:
        ports = [port["port"] for port in endpoint_slice.get("ports") or []]
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                found.update((address, port) for address in endpoint["addresses"] for port in ports)
    return found


def crd_established(api: kubernetes.client.ApiClient, name: str) -> bool:
    """Whether the CustomResourceDefinition ``name`` is Established: its resources are served."""
    crd = kubernetes.client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def delete_crd(api: kubernetes.client.ApiClient, name: str, timeout: float = 60.0) -> None:
    """Delete the CustomResourceDefinition ``name``, if it is there, and wait until it is gone (its
    objects deleted with it, then its finalizer removed)."""
    extensions = kubernetes.client.ApiextensionsV1Api(api)
    try:
        extensions.delete_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status != 404:
            raise

    def gone() -> bool:
        try:
            extensions.read_custom_resource_definition(name)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for(gone, timeout=timeout, message=f"CRD {name} deleted")


def pod_phase(pod: kubernetes.client.V1Pod) -> str:
    """The pod's phase ("" before it has one)."""
    return (pod.status.phase if pod.status else None) or ""


def finished_phase(pod: kubernetes.client.V1Pod) -> str | None:
    """``Succeeded`` or ``Failed`` once the pod has ended, else None."""
    phase = pod_phase(pod)
    return phase if phase in ("Succeeded", "Failed") else None


def pod_ready(pod: kubernetes.client.V1Pod) -> bool:
    """Whether the pod's Ready condition is True."""
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def container_status(
    pod: kubernetes.client.V1Pod, container: str | None = None
) -> kubernetes.client.V1ContainerStatus | None:
    """The status of ``container`` (default: the first), once the kubelet reported one."""
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return next((s for s in statuses if container is None or s.name == container), None)


def container_pid(pod: kubernetes.client.V1Pod, container: str | None = None) -> int:
    """The pid of a devcluster container's process (from ``containerID: process://<pid>``)."""
    status = container_status(pod, container)
    if status is None:
        raise ValueError(f"no status for container {container or '(first)'} yet")
    scheme, _, pid = (status.container_id or "").partition("://")
    if scheme != "process":
        raise ValueError(f"container {status.name} is not a devcluster process ({status.container_id})")
    return int(pid)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the control plane must be available)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def devcluster() -> Iterator[ClusterUnderTest]:
    kubeconfig = os.environ.get(KUBECONFIG_ENV)
    if kubeconfig:
        yield ExistingCluster(Path(kubeconfig))
        return
    from tandem.devcluster.cluster import DevCluster
    from tandem.devcluster.settings import TEST_PROBE_POLL_SECONDS, NodeSettings

    cluster = DevCluster(node=NodeSettings(probe_poll_seconds=TEST_PROBE_POLL_SECONDS))
    try:
        cluster.start()
    except AssetsMissingError as exc:
        needs = (
            "; setup-envtest assets lack kube-controller-manager, which the devcluster needs (it turns "
            "Deployments into pods and ready pods into EndpointSlices)"
            if "kube-controller-manager" in exc.missing
            else ""
        )
        _unavailable(f"{exc}{needs}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def local_devcluster(devcluster: ClusterUnderTest) -> DevCluster:
    """The running ``DevCluster`` itself: tests of the devcluster's own behaviour (local processes,
    pod IPs, ``pod_logs`` files) skip when ``TANDEM_TEST_KUBECONFIG`` names another cluster."""
    from tandem.devcluster.cluster import DevCluster

    if not isinstance(devcluster, DevCluster):
        pytest.skip(f"tests the devcluster itself, not the cluster {KUBECONFIG_ENV} names")
    return devcluster


@pytest.fixture(scope="session")
def kube_api(devcluster: ClusterUnderTest) -> Iterator[kubernetes.client.ApiClient]:
    with devcluster.api_client() as api:
        yield api


def namespace_name(test_name: str) -> str:
    """A DNS-label namespace name from a test's name, unique by a random suffix."""
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:45].strip("-") or "test"
    return f"{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_api: kubernetes.client.ApiClient) -> Iterator[str]:
    core = kubernetes.client.CoreV1Api(kube_api)
    name = namespace_name(request.node.name)
    core.create_namespace(
        kubernetes.client.V1Namespace(
            metadata=kubernetes.client.V1ObjectMeta(name=name, labels={"tandem.dev/test": "true"})
        )
    )

    # Clusters before 1.24 admit pods only once the account's token Secret exists.
    version = kubernetes.client.VersionApi(kube_api).get_code()
    legacy_tokens = int(re.sub(r"\D", "", version.minor) or 0) < 24

    def account_ready() -> bool:
        account = core.read_namespaced_service_account("default", name)
        return bool(account.secrets) or not legacy_tokens

    try:
        wait_for(account_ready, timeout=30, message=f"ServiceAccount default in namespace {name}")
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
