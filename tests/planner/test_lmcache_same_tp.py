"""LMCache keys KV chunks by world size and worker id, so a prefiller and a decoder only share KV at
the same tensor parallelism: with that connector the planner sizes both roles on one TP size."""

from __future__ import annotations

import yaml
from paths import REPO

from tandem.api import InferencePool, KvConnector
from tandem.planner import plan_pool

EXAMPLE = REPO / "examples" / "llama-3.1-70b-h100.yaml"


def pool_with(connector: KvConnector) -> InferencePool:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"]["disaggregation"]["kvTransfer"]["connector"] = connector.value
    return InferencePool.model_validate(manifest)


def test_nixl_lets_the_roles_choose_different_tp() -> None:
    plan = plan_pool(pool_with(KvConnector.NIXL).spec)
    assert plan.prefill is not None and plan.decode is not None
    # The premise of the next test: left alone, prefill picks another TP than the pinned decode.
    assert plan.decode.tensor_parallel == 4
    assert plan.prefill.tensor_parallel != plan.decode.tensor_parallel


def test_lmcache_sizes_prefill_on_the_decode_tp() -> None:
    plan = plan_pool(pool_with(KvConnector.LMCACHE).spec)
    assert plan.feasible, plan.reason
    assert plan.prefill is not None and plan.decode is not None
    assert plan.prefill.tensor_parallel == plan.decode.tensor_parallel == 4
    assert plan.prefill.replicas >= 1


def test_lmcache_carries_a_pinned_prefill_tp_to_decode() -> None:
    pool = pool_with(KvConnector.LMCACHE)
    spec = pool.spec.model_copy(
        update={
            "decode": pool.spec.decode.model_copy(update={"tensor_parallel": None}),
            "prefill": pool.spec.prefill.model_copy(update={"tensor_parallel": 8}),
        }
    )
    plan = plan_pool(spec)
    assert plan.feasible, plan.reason
    assert plan.prefill is not None and plan.decode is not None
    assert plan.prefill.tensor_parallel == plan.decode.tensor_parallel == 8
