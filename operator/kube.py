"""The operator's Kubernetes API access: server-side apply, status writes, deletes, Events, discovery.

``KubeApi`` is what the controller asks of the API server; ``KubeClient`` serves it, as a thin
layer over ``kubernetes_asyncio``'s ApiClient (which handles kubeconfig, tokens and TLS);
bodies stay plain JSON dicts. Requests go out with ``_preload_content=False``, so the client
raises nothing for an HTTP error status: this module reads the API server's ``Status`` body itself,
and turns a connection failure (aiohttp's ``ClientError``, a timeout) into status 0. Errors:

    KubeError            any failed call: ``status`` (HTTP; 0: no answer), ``reason`` and
    │                    ``message`` from the API server's Status, ``transient`` (worth retrying as is)
    └── NotFoundError    404
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config.config_exception import ConfigException

from tandem.operator.kinds import EVENT, POOL, Kind, kind_list_paths, kind_of
from tandem.operator.naming import FIELD_MANAGER

Body = dict[str, Any]
REQUEST_TIMEOUT_SECONDS = 30


# metav1.StatusReason values (k8s.io/apimachinery/pkg/apis/meta/v1/types.go) after which the same
# request may succeed: a concurrent writer won, the server is throttling, busy, timing out, or an
# internal error (a webhook it could not reach). Every other reason (Invalid, BadRequest,
# Forbidden, NotFound, Unauthorized, MethodNotAllowed, RequestEntityTooLarge, ...) says the request
# itself is refused: it fails again until the object, RBAC, quota or admission changes.
TRANSIENT_REASONS = frozenset(
    {
        "Conflict",
        "AlreadyExists",
        "TooManyRequests",
        "ServerTimeout",
        "Timeout",
        "ServiceUnavailable",
        "InternalError",
    }
)
# Server-side apply answers 500 with no reason when it cannot read the body against the schema:
# duplicate entries for a list's key (two env vars of one name), a field the schema does not declare.
# The same body always gets it (kubernetes/kubernetes#122480, fabric8io/kubernetes-client#6927).
REFUSED_APPLY_BODY = "failed to create typed patch object"


def is_not_served(status: int, reason: str) -> bool:
    """Whether the API server answered "404 page not found": a 404 with no Status, for a path it
    routes nowhere, which a resource type it does not serve (a CRD's, deleted or not routed yet)
    has; a missing object of a served type answers a Status with reason NotFound."""
    return status == 404 and not reason


def is_transient(status: int, reason: str, message: str) -> bool:
    """Whether retrying the same request as is may succeed, from the API server's Status."""
    if REFUSED_APPLY_BODY in message:
        return False
    if reason:
        return reason in TRANSIENT_REASONS
    # A type not served is, for a CRD just Established (or being installed again), a moment's
    # wait; for one deleted, the reconciler asks discovery (Reconciler._withdrawn).
    return is_not_served(status, reason) or status in (0, 409, 429) or status >= 500


class KubeError(Exception):
    def __init__(self, status: int, message: str, *, reason: str = "", request: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.request = request
        super().__init__(f"{request + ': ' if request else ''}{self.answer}: {message}")

    @property
    def answer(self) -> str:
        """The API server's answer in short: "HTTP 422 Invalid", "HTTP 500", or "no answer"."""
        return f"HTTP {self.status} {self.reason}".rstrip() if self.status else "no answer"

    @property
    def transient(self) -> bool:
        return is_transient(self.status, self.reason, self.message)

    @property
    def not_served(self) -> bool:
        return is_not_served(self.status, self.reason)


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


class KubeApi(Protocol):
    """The calls the controller makes; each raises ``KubeError`` for a failure."""

    async def served_versions(self, group: str) -> list[str]: ...

    async def list_objects(
        self, kind: Kind, namespaces: tuple[str, ...], label_selector: str
    ) -> list[Body]: ...

    async def apply(self, manifest: Body, *, field_manager: str = FIELD_MANAGER) -> Body: ...

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str) -> None: ...

    async def write_pool_status(self, namespace: str, name: str, status: Body) -> Body: ...

    async def create_event(self, event: Body) -> None: ...


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
            raise KubeError(0, repr(exc), request=f"{method} {path}") from exc
        async with response:
            text = await response.text()
            if response.status >= 400:
                reason, message = _status(text)
                error = NotFoundError if response.status == 404 else KubeError
                raise error(response.status, message, reason=reason, request=f"{method} {path}")
        result: Body = json.loads(text) if text else {}
        return result

    async def list_objects(self, kind: Kind, namespaces: tuple[str, ...], label_selector: str) -> list[Body]:
        """The objects of ``kind`` matching ``label_selector`` in ``namespaces`` (every namespace when
        empty), each with its ``apiVersion`` and ``kind`` (which a LIST's items lack)."""
        found = []
        for path in kind_list_paths(kind, namespaces):
            listing = await self.request("GET", path, query={"labelSelector": label_selector})
            found += [
                {"apiVersion": kind.api_version, "kind": kind.kind, **item}
                for item in listing.get("items") or []
            ]
        return found

    async def apply(self, manifest: Body, *, field_manager: str = FIELD_MANAGER) -> Body:
        """Server-side apply as ``field_manager`` (the operator's own by default); force takes back
        fields others changed."""
        meta = manifest["metadata"]
        path = kind_of(manifest).path(meta["namespace"], meta["name"])
        query = {"fieldManager": field_manager, "force": "true"}
        try:
            return await self.request(
                "PATCH", path, query=query, body=manifest, content_type="application/apply-patch+yaml"
            )
        except KubeError as exc:
            if exc.reason not in ("AlreadyExists", "Conflict"):
                raise
        # Another writer got there first (the pools of a shared router apply its objects at once):
        # an apply that creates answers AlreadyExists, one that updates may answer Conflict ("the
        # object has been modified"; with force there is no field conflict). Again: apply is
        # idempotent, and the second one sees the other's write.
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


def _status(text: str) -> tuple[str, str]:
    """``reason`` and ``message`` of a Kubernetes Status body; else no reason and the raw text."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return "", text[:500]
    return str(body.get("reason") or ""), str(body.get("message") or text[:500])
