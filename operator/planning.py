"""The planner as the operator calls it: one catalog for the process, one plan per distinct spec.

Reconciles run on every event of a pool or its children; the plan only changes with the spec.
"""

from __future__ import annotations

import functools

from tandem.api import InferencePoolSpec
from tandem.operator.decide import Planner
from tandem.planner import GpuBudget, Plan, load_catalog, plan_pool

# How the operator's limit is named in a plan's reasons and a pool's conditions.
MAX_GPUS_PER_POOL_SOURCE = "the operator's --max-gpus-per-pool"


def catalog_planner(max_gpus_per_pool: int | None = None, cache_size: int = 1024) -> Planner:
    """``max_gpus_per_pool``: the operator's GPU limit per pool (OperatorSettings.max_gpus_per_pool);
    each plan stays within it and within the pool's spec.maxGpus."""
    catalog = load_catalog()
    limit = None
    if max_gpus_per_pool is not None:
        limit = GpuBudget(gpus=max_gpus_per_pool, source=MAX_GPUS_PER_POOL_SOURCE)

    @functools.lru_cache(maxsize=cache_size)
    def plan_for(spec_json: str) -> Plan:
        return plan_pool(InferencePoolSpec.model_validate_json(spec_json), catalog, limit)

    def planner(spec: InferencePoolSpec) -> Plan:
        return plan_for(spec.model_dump_json())

    return planner
