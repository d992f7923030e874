"""PodDisruptionBudgets: voluntary evictions take at most one pod of a component at a time."""

from __future__ import annotations

from tandem.operator.build.meta import Manifest, manifest
from tandem.operator.capabilities import Capabilities


def disruption_budget(caps: Capabilities, meta: Manifest, selector: dict[str, str]) -> Manifest:
    """``meta``: the budget's metadata (that of the component it guards)."""
    # maxUnavailable rather than minAvailable: a one-replica component must still let a node drain.
    return manifest(
        caps.pdb_api_version,
        "PodDisruptionBudget",
        meta,
        spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    )
