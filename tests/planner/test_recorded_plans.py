"""The benchmark's plans (benchmarks/planner_speed.py: every catalog model's pool on H100-80GB and
on all seven catalog GPUs; on H100-80GB also with pinned replicas and with LMCache) pinned as
recorded: what the search chose for each role of both deployments, its predictions and the
rationale. The search's bounds and memos (planner/sizing.py `cheapest_first` and `best_design`,
the plan's sizings reused by the parallelism rationale) only leave out work; these plans were
recorded before them (073a1e4).

A deliberate change to the planner's choices regenerates the file: TANDEM_UPDATE_GOLDEN=1 pytest
tests/planner/test_recorded_plans.py, then review the diff.
"""

from __future__ import annotations

import importlib.util
import json
import os
from types import ModuleType
from typing import Any

from paths import REPO, TESTS

from tandem.api import KvConnector
from tandem.planner import Plan, RolePins, RolePlan, load_catalog, plan

RECORDED = TESTS / "golden" / "planner" / "benchmark_plans.json"
UPDATE = os.environ.get("TANDEM_UPDATE_GOLDEN") == "1"
# Floats to 12 significant digits: any change of layout, replicas or batch moves them far more.
DIGITS = 12
ROLE_FIELDS = (
    "gpu_type",
    "tensor_parallel",
    "pipeline_parallel",
    "data_parallel",
    "expert_parallel",
    "all2all_backend",
    "replicas",
    "max_batch",
    "max_num_batched_tokens",
    "kv_capacity_tokens",
    "prefill_chunk_tokens",
    "max_requests_per_second",
    "predicted_ttft_ms",
    "predicted_itl_ms",
)


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("planner_speed", REPO / "benchmarks" / "planner_speed.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rounded(value: Any) -> Any:
    return float(f"{value:.{DIGITS}g}") if isinstance(value, float) else value


def _role(role: RolePlan | None) -> dict[str, Any] | None:
    return None if role is None else {name: _rounded(getattr(role, name)) for name in ROLE_FIELDS}


def _record(result: Plan) -> dict[str, Any]:
    return {
        "deployment": result.deployment,
        "recommended": result.recommended,
        "feasible": result.feasible,
        "reason": result.reason,
        "gpus": result.gpus,
        "prompt_tokens_threshold": result.prompt_tokens_threshold,
        "rationale": result.rationale,
        **{
            f"{kind}.{name}": _role(getattr(deployment, name))
            for kind, deployment in (
                ("disaggregated", result.disaggregated),
                ("aggregated", result.aggregated),
            )
            for name in ("prefill", "decode")
        },
    }


def _plans() -> dict[str, dict[str, Any]]:
    """The benchmark's plans, and on H100-80GB with both roles pinned to two replicas (the bound's
    floor is two replicas' GPUs) and with the LMCache connector (one TP size for both roles, one
    stage, no DP, the decoders' PD buffer)."""
    benchmark = _benchmark()
    catalog = load_catalog()
    plans = {}
    for model in catalog.models:
        for search, gpus in benchmark.searches(catalog).items():
            plans[f"{model} on {search}"] = _record(plan(benchmark.pool_request(model, gpus)))
        pinned = benchmark.pool_request(model, ("H100-80GB",), RolePins(replicas=2))
        plans[f"{model} on H100-80GB, 2 replicas pinned"] = _record(plan(pinned))
        lmcache = benchmark.pool_request(model, ("H100-80GB",)).model_copy(
            update={"connector": KvConnector.LMCACHE}
        )
        plans[f"{model} on H100-80GB, LMCache"] = _record(plan(lmcache))
    return plans


def test_the_benchmark_plans_are_the_recorded_ones() -> None:
    plans = _plans()
    if UPDATE:
        RECORDED.write_text(json.dumps(plans, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(RECORDED.read_text())
    assert sorted(plans) == sorted(recorded)
    changed = [case for case in plans if plans[case] != recorded[case]]
    assert not changed, f"plans differ from {RECORDED.name}: {changed}"
