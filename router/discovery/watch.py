"""List-then-watch that survives: reconnects after errors, relists after 410 Gone, and never
clears what it knows in between (the last listing stays in force until a new one replaces it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.watch import Watch

log = logging.getLogger(__name__)

ListCall = Callable[..., Awaitable[Any]]
# Server-side watch timeout: the watch is renewed this often even when nothing happens.
WATCH_TIMEOUT_S = 240
BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


async def follow(
    what: str,
    list_call: ListCall,
    replace: Callable[[list[dict[str, Any]]], None],
    apply: Callable[[str, dict[str, Any]], None],
) -> None:
    """Run until cancelled. `replace(items)` gets each full listing, `apply(type, object)` each
    ADDED/MODIFIED/DELETED event."""
    resource_version: str | None = None
    failures = 0
    while True:
        try:
            if resource_version is None:
                listing = await list_call()
                replace(list(listing.get("items") or []))
                resource_version = listing["metadata"]["resourceVersion"]
            async with Watch(return_type="object") as watch:
                stream = watch.stream(
                    list_call,
                    resource_version=resource_version,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    allow_watch_bookmarks=True,
                )
                async for event in stream:
                    obj = event["raw_object"]
                    resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                    if event["type"] != "BOOKMARK":
                        apply(event["type"], obj)
                    failures = 0
        except ApiException as exc:
            if exc.status == 410:  # our resourceVersion is too old: list again, keep state till then
                log.info("%s watch expired; relisting", what)
                resource_version = None
                continue
            failures += 1
            log.warning("%s watch failed (%s %s); retrying", what, exc.status, exc.reason)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failures += 1
            log.warning("%s watch lost its connection (%r); retrying", what, exc)
        except Exception:  # an object we could not read: say so loudly, keep what we know, retry
            failures += 1
            resource_version = None
            log.exception("%s watch failed; listing again", what)
        if failures:
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
