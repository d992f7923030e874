"""A Tandem pool through the Kubernetes API: its InferencePool and its Deployments.

The credentials are kubectl's: ``--kubeconfig``, else ``$KUBECONFIG`` or ``~/.kube/config``, else the
pod's service account. The namespace defaults to the kubeconfig context's (the pod's in a pod). RBAC
needed, in that namespace: get on ``inferencepools`` (tandem.dev) and list on ``deployments`` (apps).
Multi-node roles run as LeaderWorkerSets, which are not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from tandem.api import InferencePool
from tandem.api.resource import GROUP, PLURAL, POOL_LABEL, VERSION
from tandem.load.replicas import PoolError

_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _pod_namespace() -> str | None:
    """The namespace of the pod this runs in; None outside a pod."""
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return None


class KubernetesPool:
    """A :class:`~tandem.load.replicas.PoolReader` on the API server; ``close()`` when done."""

    def __init__(self, api: client.ApiClient, name: str, namespace: str) -> None:
        self.name = name
        self.namespace = namespace
        self._api = api
        self._objects = client.CustomObjectsApi(api)

    @classmethod
    async def connect(cls, name: str, namespace: str | None, kubeconfig: Path | None) -> KubernetesPool:
        configuration = client.Configuration()
        config_file = str(kubeconfig) if kubeconfig else None
        try:
            await config.load_kube_config(config_file=config_file, client_configuration=configuration)
            _, active = config.list_kube_config_contexts(config_file)
            namespace = namespace or (active or {}).get("context", {}).get("namespace") or "default"
        except (config.ConfigException, OSError) as exc:
            pod_namespace = _pod_namespace()
            if kubeconfig is not None or pod_namespace is None:
                raise PoolError(f"no Kubernetes credentials for pool {name}: {exc}") from exc
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            namespace = namespace or pod_namespace
        return cls(client.ApiClient(configuration), name, namespace)

    async def close(self) -> None:
        await self._api.close()

    async def resource(self) -> InferencePool:
        where = f"InferencePool {self.namespace}/{self.name}"
        try:
            body = await self._objects.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except ApiException as exc:
            raise PoolError(f"cannot read {where}: {exc.status} {exc.reason}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PoolError(f"cannot reach the API server for {where}: {exc}") from exc
        try:
            return InferencePool.model_validate(body)
        except ValidationError as exc:
            raise PoolError(f"{where} is not a valid InferencePool: {exc}") from exc

    async def deployments(self) -> list[dict[str, Any]]:
        where = f"the Deployments of pool {self.namespace}/{self.name}"
        try:
            listed = await self._objects.list_namespaced_custom_object(
                "apps", "v1", self.namespace, "deployments", label_selector=f"{POOL_LABEL}={self.name}"
            )
        except ApiException as exc:
            raise PoolError(f"cannot list {where}: {exc.status} {exc.reason}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PoolError(f"cannot reach the API server for {where}: {exc}") from exc
        items: list[dict[str, Any]] = listed.get("items") or []
        return items
