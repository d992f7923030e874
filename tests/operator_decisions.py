"""Pool objects from the examples, decided with the real planner (no cluster): what the operator's
decision tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tandem.operator.capabilities import Capabilities
from tandem.operator.decide import Decision, decide
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import Images

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PLANNER = catalog_planner()
OLD = Capabilities(pdb_api_version="policy/v1beta1")
LWS = Capabilities(pdb_api_version="policy/v1", lws_api_version="leaderworkerset.x-k8s.io/v1")


def pool_body(example: str = "simulator-pool.yaml", name: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    body["metadata"].update(namespace="serving", uid="uid-1", generation=3)
    if name is not None:
        body["metadata"]["name"] = name
    for path, value in spec.items():
        node = body["spec"]
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return body


def run(body: dict[str, Any], caps: Capabilities = OLD) -> Decision:
    return decide(body, caps, Images(), PLANNER)


def refused(body: dict[str, Any]) -> str:
    """The InvalidSpec message of a pool that must create nothing."""
    decision = run(body)
    assert decision.objects is None and decision.problem is not None, "the pool was accepted"
    assert decision.problem.reason == "InvalidSpec", decision.problem
    assert decision.plan is None  # refused before planning
    return decision.problem.message
