"""The planner as the operator calls it: one catalog for the process, one plan per distinct spec.

Reconciles run on every event of a pool or its children; the plan only changes with the spec.
"""

from __future__ import annotations

import functools

from tandem.api import InferencePoolSpec
from tandem.operator.decide import Planner
from tandem.planner import Plan, load_catalog, plan_pool


def catalog_planner(cache_size: int = 1024) -> Planner:
    catalog = load_catalog()

    @functools.lru_cache(maxsize=cache_size)
    def plan_for(spec_json: str) -> Plan:
        return plan_pool(InferencePoolSpec.model_validate_json(spec_json), catalog)

    def planner(spec: InferencePoolSpec) -> Plan:
        return plan_for(spec.model_dump_json())

    return planner
