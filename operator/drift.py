"""Does a child need applying? Compares the desired object with the live one, without the API.

A child is applied when it is missing, when what the operator wants changed (the desired-hash
annotation differs), or when someone changed a field the operator sets (the live object no longer
contains the desired one). Containment follows server-side apply: fields and list entries that
others added are theirs and no reason to apply; lists of named entries match by name.
"""

from __future__ import annotations

import copy
import hashlib
import json
from enum import StrEnum
from typing import Any

from tandem.operator.naming import DESIRED_HASH_ANNOTATION

Body = dict[str, Any]


class Change(StrEnum):
    CREATE = "created"
    UPDATE = "updated"
    REPAIR = "restored"


def digest(manifest: Body) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def stamp(manifest: Body) -> Body:
    """The manifest with its own digest as an annotation (a copy; the input stays as it was)."""
    stamped = copy.deepcopy(manifest)
    stamped["metadata"].setdefault("annotations", {})[DESIRED_HASH_ANNOTATION] = digest(manifest)
    return stamped


def contains(live: Any, desired: Any) -> bool:
    """Whether ``live`` holds every field and value of ``desired``."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list):
            return False
        if desired and all(isinstance(item, dict) and "name" in item for item in desired):
            by_name = {item.get("name"): item for item in live if isinstance(item, dict)}
            return all(item["name"] in by_name and contains(by_name[item["name"]], item) for item in desired)
        return len(live) == len(desired) and all(contains(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)


def needed_change(live: Body | None, stamped: Body) -> Change | None:
    """What applying ``stamped`` (a :func:`stamp`-ed manifest) would do to ``live``; None: nothing."""
    if live is None:
        return Change.CREATE
    annotations = live.get("metadata", {}).get("annotations") or {}
    if (
        annotations.get(DESIRED_HASH_ANNOTATION)
        != stamped["metadata"]["annotations"][DESIRED_HASH_ANNOTATION]
    ):
        return Change.UPDATE
    return None if contains(live, stamped) else Change.REPAIR
