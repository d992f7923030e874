"""Where a request goes: pure functions over endpoint snapshots.

Filters narrow the candidates, scorers rate them in [0, 1], pickers choose one; `plan_route`
composes them into a decode choice, then (for a handoff) a prefill choice. Nothing here does I/O or
imports an HTTP, Kubernetes or ZMQ library (an import-linter contract holds it to that), so every
rule is testable with frozen snapshots.
"""

from tandem.router.decision.classify import (
    Route,
    estimate_prompt_tokens,
    needs_exact_count,
    wants_disaggregation,
)
from tandem.router.decision.plan import RoutePlan, plan_route
from tandem.router.decision.snapshot import EndpointSnapshot, RequestFacts, Role, RoutingPolicy

__all__ = [
    "EndpointSnapshot",
    "RequestFacts",
    "Role",
    "Route",
    "RoutePlan",
    "RoutingPolicy",
    "estimate_prompt_tokens",
    "needs_exact_count",
    "plan_route",
    "wants_disaggregation",
]
