"""List-then-watch caches of API objects (a minimal client-go informer) on ``kubernetes_asyncio``.

An ``Informer`` lists, then watches from the list's resourceVersion; when the watch ends or fails
(including 410 Gone) it lists again. Objects are client models, or plain dicts for APIs the client
has no models for (EndpointSlices ``v1beta1``, read through ``CustomObjectsApi``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.watch import Watch

log = logging.getLogger(__name__)

_WATCH_SECONDS = 240
_RETRY_SECONDS = 1.0

Key = tuple[str, str]
# Called with ("ADDED" | "MODIFIED" | "DELETED", object) for every change, after the cache holds it.
EventHandler = Callable[[str, Any], None]


def object_key(obj: Any) -> Key:
    """(namespace, name) of a model or dict object."""
    if isinstance(obj, dict):
        metadata = obj["metadata"]
        return metadata.get("namespace") or "", metadata["name"]
    return obj.metadata.namespace or "", obj.metadata.name


def _list_resource_version(result: Any) -> tuple[list[Any], str]:
    if isinstance(result, dict):
        return list(result.get("items") or []), result["metadata"]["resourceVersion"]
    return list(result.items or []), result.metadata.resource_version


class Informer:
    """Keeps ``objects`` in step with the API; ``list_call`` is a ``list_*`` function (with its
    positional arguments bound, e.g. by ``functools.partial``)."""

    def __init__(self, name: str, list_call: Callable[..., Awaitable[Any]], on_event: EventHandler) -> None:
        self.name = name
        self._list_call = list_call
        self._on_event = on_event
        self.objects: dict[Key, Any] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                resource_version = await self._relist()
                await self._watch(resource_version)
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("%s: watch failed (%s), listing again", self.name, exc.status)
                    await asyncio.sleep(_RETRY_SECONDS)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("%s: connection failed (%s), listing again", self.name, exc)
                await asyncio.sleep(_RETRY_SECONDS)

    async def _relist(self) -> str:
        items, resource_version = _list_resource_version(await self._list_call())
        fresh = {object_key(item): item for item in items}
        gone = [self.objects[key] for key in self.objects.keys() - fresh.keys()]
        self.objects = fresh
        for obj in gone:
            self._on_event("DELETED", obj)
        for obj in fresh.values():
            self._on_event("MODIFIED", obj)
        self.synced.set()
        return resource_version

    async def _watch(self, resource_version: str) -> None:
        async with Watch() as watch:
            stream = watch.stream(
                self._list_call, resource_version=resource_version, timeout_seconds=_WATCH_SECONDS
            )
            async for event in stream:
                kind, obj = event["type"], event["object"]
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.objects.pop(object_key(obj), None)
                else:
                    self.objects[object_key(obj)] = obj
                self._on_event(kind, obj)
