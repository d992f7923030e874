"""PodDisruptionBudgets: voluntary evictions take at most one pod of a component at a time."""

from __future__ import annotations

from tandem.operator.build.meta import Manifest, manifest, metadata
from tandem.operator.capabilities import Capabilities
from tandem.operator.naming import PoolRef


def disruption_budget(
    pool: PoolRef, caps: Capabilities, name: str, labels: dict[str, str], selector: dict[str, str]
) -> Manifest:
    # maxUnavailable rather than minAvailable: a one-replica component must still let a node drain.
    return manifest(
        caps.pdb_api_version,
        "PodDisruptionBudget",
        metadata(pool, name, labels),
        spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    )
