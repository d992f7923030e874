"""Kubernetes memory quantities, as far as the builders add to them."""

from __future__ import annotations

import math
import re

from tandem.operator.build.meta import Manifest

GIB = 2**30
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_FACTORS: dict[str | None, int] = {
    None: 1,
    **{suffix: 1024 ** (i + 1) for i, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{suffix: 1000 ** (i + 1) for i, suffix in enumerate(("k", "M", "G", "T", "P", "E"))},
}


def gib_quantity(gib: float) -> str:
    """``gib`` as a quantity, rounded up to a whole MiB."""
    mib = math.ceil(round(gib * 1024, 6))
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def quantity_bytes(quantity: str) -> int | None:
    """The bytes of a quantity such as ``64Gi`` or ``500M``; None for one it cannot read."""
    match = _QUANTITY.match(quantity)
    if match is None:
        return None
    return int(float(match[1]) * _FACTORS[match[2]])


def with_memory(resources: Manifest, extra_bytes: int) -> Manifest:
    """Container ``resources`` with ``extra_bytes`` more memory: added to a request or a limit that
    is set, the request set to it when there is none. A quantity it cannot read is left as it is,
    for the API server to refuse."""
    if extra_bytes == 0:
        return resources
    out = {section: dict(values) for section, values in resources.items()}
    out.setdefault("requests", {}).setdefault("memory", "0")
    for values in (out["requests"], out.get("limits", {})):
        current = quantity_bytes(values["memory"]) if "memory" in values else None
        if current is not None:
            values["memory"] = gib_quantity((current + extra_bytes) / GIB)
    return out
