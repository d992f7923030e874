"""The operator run in-process against a test cluster, and helpers to read what it made."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from prometheus_text import metric_sum

from tandem.api import GROUP, PLURAL, VERSION
from tandem.devcluster.processes import free_port
from tandem.devcluster.testing import ClusterUnderTest
from tandem.operator.planning import catalog_planner
from tandem.operator.rbac import rbac_manifests
from tandem.operator.runner import run_operator
from tandem.operator.settings import OperatorSettings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PLANNER = catalog_planner()
CHILD_KINDS = (
    "Deployment",
    "Service",
    "ConfigMap",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "PodDisruptionBudget",
)


class OperatorThread:
    """``run_operator`` on its own event loop and thread, watching one namespace."""

    def __init__(self, kubeconfig: Path, namespace: str, resync_seconds: float = 600) -> None:
        self.settings = OperatorSettings(
            kubeconfig=kubeconfig,
            namespaces=(namespace,),
            bind_host="127.0.0.1",
            liveness_port=free_port(),
            metrics_port=free_port(),
            resync_seconds=resync_seconds,
        )
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(run_operator(self.settings, PLANNER, stop_flag=self._stop, ready_flag=self._ready))
        except BaseException as exc:  # reported by stop() and the tests
            self.error = exc

    def start(self) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError(f"the operator did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        if self._thread.is_alive():
            raise RuntimeError("the operator did not stop within 60 s")
        if self.error is not None:
            raise RuntimeError("the operator failed") from self.error

    def _get(self, port: int, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()

    def healthy(self) -> bool:
        return self._get(self.settings.liveness_port, "/healthz")[0] == 200

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels``."""
        _, text = self._get(self.settings.metrics_port, "/metrics")
        return metric_sum(text, name, **labels)


def example(name: str, **spec: Any) -> dict[str, Any]:
    """An example pool, with top-level spec sections merged from ``spec`` (wire names)."""
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    for section, values in spec.items():
        body["spec"][section] = {**body["spec"].get(section, {}), **values}
    return body


class PoolApi:
    """Pools and their children in one namespace, through the admin client."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self._api = api
        self.objects = kubernetes.client.CustomObjectsApi(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        groups = kubernetes.client.ApisApi(api).get_api_versions().groups
        served = {v.version for g in groups if g.name == "policy" for v in g.versions}
        self.pdb_version = "v1" if "v1" in served else "v1beta1"

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.objects.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created

    def get(self, name: str) -> dict[str, Any]:
        pool: dict[str, Any] = self.objects.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return pool

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.objects.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.objects.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        conditions = (self.get(name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), None)

    def ready(self, name: str) -> bool:
        condition = self.condition(name, "Ready")
        return condition is not None and condition["status"] == "True"

    def children(self, pool: str) -> dict[tuple[str, str], dict[str, Any]]:
        """Every child of ``pool`` (by its pool label), keyed by (kind, name), as dicts."""
        selector = f"tandem.dev/pool={pool}"
        ns = self.namespace
        found: dict[tuple[str, str], dict[str, Any]] = {}
        listings = {
            "Deployment": self.apps.list_namespaced_deployment(ns, label_selector=selector),
            "Service": self.core.list_namespaced_service(ns, label_selector=selector),
            "ConfigMap": self.core.list_namespaced_config_map(ns, label_selector=selector),
            "ServiceAccount": self.core.list_namespaced_service_account(ns, label_selector=selector),
            "Role": self.rbac.list_namespaced_role(ns, label_selector=selector),
            "RoleBinding": self.rbac.list_namespaced_role_binding(ns, label_selector=selector),
        }
        for kind, listing in listings.items():
            for item in listing.items:
                found[kind, item.metadata.name] = self._api.sanitize_for_serialization(item)
        budgets = self.objects.list_namespaced_custom_object(
            "policy", self.pdb_version, ns, "poddisruptionbudgets", label_selector=selector
        )
        for item in budgets["items"]:
            found["PodDisruptionBudget", item["metadata"]["name"]] = item
        return found

    def resource_versions(self, pool: str) -> dict[tuple[str, str], str]:
        versions = {key: item["metadata"]["resourceVersion"] for key, item in self.children(pool).items()}
        versions["InferencePool", pool] = self.get(pool)["metadata"]["resourceVersion"]
        return versions

    def events(self, pool: str) -> list[Any]:
        listing = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={pool}"
        )
        return [e for e in listing.items if e.involved_object.kind == "InferencePool"]


def _operator_account(namespace: str) -> str:
    """Unique per test namespace (whose names end in a random suffix), and a valid label value."""
    return f"tandem-operator-{namespace[-6:]}"


def operator_kubeconfig(api: kubernetes.client.ApiClient, admin: Path, namespace: str, folder: Path) -> Path:
    """A kubeconfig for the operator's own ServiceAccount (``tandem operator rbac``) in
    ``namespace``: held to its RBAC as when deployed, not the admin's (who may grant anything)."""
    account, role, binding = rbac_manifests(namespace, _operator_account(namespace))
    core, rbac = kubernetes.client.CoreV1Api(api), kubernetes.client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, account)
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding(binding)
    request = {"spec": {"expirationSeconds": 3600}}  # the API server's own audience
    token = core.create_namespaced_service_account_token(account["metadata"]["name"], namespace, request)
    config = yaml.safe_load(admin.read_text())
    for user in config["users"]:
        user["user"] = {"token": token.status.token}
    path = folder / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def remove_operator_rbac(api: kubernetes.client.ApiClient, namespace: str) -> None:
    """The cluster-scoped part of ``operator_kubeconfig`` (the namespace takes the rest with it)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    rbac.delete_cluster_role_binding(_operator_account(namespace))
    rbac.delete_cluster_role(_operator_account(namespace))


@contextmanager
def operator_under_rbac(
    api: kubernetes.client.ApiClient, admin: Path, namespace: str, folder: Path
) -> Iterator[OperatorThread]:
    """The operator running as its own ServiceAccount (``operator_kubeconfig``); stopped and its
    cluster-scoped RBAC removed afterwards."""
    running = OperatorThread(operator_kubeconfig(api, admin, namespace, folder), namespace).start()
    try:
        yield running
    finally:
        running.stop()
        remove_operator_rbac(api, namespace)


# The fixtures below reach the tests through tests/operator/conftest.py.


@pytest.fixture
def pools(kube_api: kubernetes.client.ApiClient, inferencepool_crd: Any, namespace: str) -> PoolApi:
    return PoolApi(kube_api, namespace)


@pytest.fixture
def operator(
    devcluster: ClusterUnderTest, namespace: str, inferencepool_crd: Any
) -> Iterator[OperatorThread]:
    """The operator with the admin's kubeconfig (for tests about what it does, not what it may)."""
    running = OperatorThread(devcluster.kubeconfig, namespace).start()
    yield running
    running.stop()


@pytest.fixture
def rbac_operator(
    devcluster: ClusterUnderTest,
    kube_api: kubernetes.client.ApiClient,
    namespace: str,
    inferencepool_crd: Any,
    tmp_path: Path,
) -> Iterator[OperatorThread]:
    """The operator held to its own RBAC, as when deployed: whatever it reads or writes must be in
    the ClusterRole it generates (and the chart renders)."""
    with operator_under_rbac(kube_api, devcluster.kubeconfig, namespace, tmp_path) as running:
        yield running
