"""The operator's Kubernetes API access: server-side apply, status writes, deletes, Events, discovery.

A thin layer over ``kubernetes_asyncio``'s ApiClient (which handles kubeconfig, tokens and TLS);
bodies stay plain JSON dicts. Errors:

    KubeError            any failed call; ``status`` is the HTTP status (0: no answer)
    └── NotFoundError    404
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config.config_exception import ConfigException

from tandem.operator.kinds import EVENT, POOL, Kind, kind_of
from tandem.operator.naming import FIELD_MANAGER

Body = dict[str, Any]
REQUEST_TIMEOUT_SECONDS = 30


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying as it is: no answer, throttling, a conflict or a server-side failure."""
        return self.status in (0, 409, 429) or self.status >= 500


class NotFoundError(KubeError):
    pass


async def load_configuration(kubeconfig: Path | None) -> Configuration:
    """In-cluster credentials when running in a pod, else the given (or default) kubeconfig."""
    configuration = Configuration()
    if kubeconfig is None:
        try:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except ConfigException:
            pass
    await kube_config.load_kube_config(
        config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration
    )
    return configuration


class KubeClient:
    def __init__(self, api: ApiClient) -> None:
        self._api = api

    @classmethod
    async def connect(cls, kubeconfig: Path | None) -> KubeClient:
        return cls(ApiClient(await load_configuration(kubeconfig)))

    async def close(self) -> None:
        await self._api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Body:
        try:
            response = await self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, f"{method} {path}: {exc!r}") from exc
        async with response:
            text = await response.text()
            if response.status == 404:
                raise NotFoundError(404, f"{method} {path}: not found")
            if response.status >= 400:
                raise KubeError(response.status, f"{method} {path}: {_message(text)}")
        result: Body = json.loads(text) if text else {}
        return result

    async def apply(self, manifest: Body) -> Body:
        """Server-side apply as the operator's field manager; force takes back fields others changed."""
        meta = manifest["metadata"]
        path = kind_of(manifest).path(meta["namespace"], meta["name"])
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        return await self.request(
            "PATCH", path, query=query, body=manifest, content_type="application/apply-patch+yaml"
        )

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str) -> None:
        """Delete one object, only if it is still the one seen (uid precondition)."""
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"uid": uid},
            "propagationPolicy": "Background",
        }
        with contextlib.suppress(NotFoundError):
            await self.request("DELETE", kind.path(namespace, name), body=body)

    async def write_pool_status(self, namespace: str, name: str, status: Body) -> Body:
        """Replace the pool's whole status (JSON patch ``add`` sets the member whether or not it exists)."""
        patch = [{"op": "add", "path": "/status", "value": status}]
        path = POOL.path(namespace, name, "status")
        return await self.request("PATCH", path, body=patch, content_type="application/json-patch+json")

    async def create_event(self, event: Body) -> None:
        await self.request("POST", EVENT.path(event["metadata"]["namespace"]), body=event)

    async def served_versions(self, group: str) -> list[str]:
        """``<group>/<version>`` the API server serves for ``group`` (empty when none)."""
        try:
            answer = await self.request("GET", f"/apis/{group}")
        except NotFoundError:
            return []
        return [str(entry["groupVersion"]) for entry in answer.get("versions", [])]


def _message(text: str) -> str:
    """The ``message`` of a Kubernetes Status body, or the raw text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    return str(body.get("message", text[:500])) if isinstance(body, dict) else text[:500]
