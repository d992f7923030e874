"""The plan as the operator and the simulator consume it: from an InferencePool spec, per
disaggregation mode, with its status shape, JSON contract, threshold and rationale."""

from __future__ import annotations

import json
from typing import Any

import pytest

import tandem.planner
from tandem.api import EngineTiming, InferencePoolSpec, PlanStatus
from tandem.planner import PlanRequest, plan, plan_pool
from tandem.planner.plan import Plan


def pool(**overrides: Any) -> InferencePoolSpec:
    spec: dict[str, Any] = {
        "model": {"name": "meta-llama/Llama-3.1-70B-Instruct"},
        "accelerator": {"type": "H100-80GB"},
        "slo": {"ttftMs": 1500, "itlMs": 40},
        "workload": {
            "requestsPerSecond": 6,
            "promptTokens": {"mean": 3000, "p90": 6000},
            "outputTokens": {"mean": 300},
        },
    }
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value}
    return InferencePoolSpec.model_validate(spec)


def test_public_api_is_pinned() -> None:
    assert {
        "plan",
        "plan_pool",
        "Plan",
        "PlanRequest",
        "PlannerError",
        "UnknownModelError",
        "UnknownGpuError",
    } <= set(tandem.planner.__all__)


@pytest.mark.parametrize("mode", ["Auto", "Always", "Never"])
def test_modes_decide_what_is_deployed(mode: str) -> None:
    result = plan_pool(pool(disaggregation={"mode": mode}))
    assert result.feasible and result.prefill and result.decode
    expected = {"Always": "Disaggregated", "Never": "Aggregated", "Auto": result.recommended}[mode]
    assert result.deployment == expected
    if result.deployment == "Aggregated":
        assert result.prefill.replicas == 0 and result.prefill.gpus == 0
        assert result.decode.role == "aggregated"
        assert result.prompt_tokens_threshold is None
        assert result.gpus == result.aggregated.gpus
    else:
        assert result.prefill.replicas >= 1 and result.decode.role == "decode"
        assert result.prompt_tokens_threshold is not None
        assert result.gpus == result.prefill.gpus + result.decode.gpus == result.disaggregated.gpus


def test_recommendation_follows_the_numbers_side_by_side() -> None:
    result_slo = pool().slo
    for rps in (0.5, 4, 16):
        result = plan_pool(pool(workload={"requestsPerSecond": rps}))
        d, a = result.disaggregated, result.aggregated
        assert d.feasible and a.feasible
        headroom = {x.kind: x.slo_headroom(result_slo, rps).spare for x in (a, d)}
        a_key = (a.gpus, round(a.cost_per_hour_usd, 6), -headroom["Aggregated"])
        d_key = (d.gpus, round(d.cost_per_hour_usd, 6), -headroom["Disaggregated"])
        expected = "Aggregated" if a_key <= d_key else "Disaggregated"
        assert result.recommended == expected
        assert str(d.gpus) in result.rationale and str(a.gpus) in result.rationale


def test_per_role_placements_reach_the_roles() -> None:
    result = plan_pool(
        pool(
            accelerator={"prefill": {"type": "H200-141GB"}, "decode": {"type": "A100-80GB"}},
            disaggregation={"mode": "Always"},
        )
    )
    assert result.prefill and result.decode
    assert (result.prefill.gpu_type, result.decode.gpu_type) == ("H200-141GB", "A100-80GB")


def test_pinned_role_values_come_from_the_spec() -> None:
    result = plan_pool(
        pool(
            disaggregation={"mode": "Always"},
            decode={"tensorParallel": 8, "replicas": 2},
            prefill={"replicas": 3},
        )
    )
    assert result.decode and result.prefill
    assert (result.decode.tensor_parallel, result.decode.replicas, result.prefill.replicas) == (8, 2, 3)


def test_pinned_threshold_wins_and_auto_threshold_is_derived() -> None:
    derived = plan_pool(pool(disaggregation={"mode": "Always"}))
    pinned = plan_pool(pool(disaggregation={"mode": "Always", "promptTokensThreshold": 1234}))
    assert derived.prompt_tokens_threshold is not None and derived.prompt_tokens_threshold != 1234
    assert pinned.prompt_tokens_threshold == 1234


def test_threshold_drops_when_the_itl_budget_leaves_no_slack() -> None:
    loose = plan_pool(pool(disaggregation={"mode": "Always"}, slo={"itlMs": 80}))
    tight = plan_pool(pool(disaggregation={"mode": "Always"}, slo={"itlMs": 25}))
    assert loose.prompt_tokens_threshold is not None and tight.prompt_tokens_threshold is not None
    assert loose.prompt_tokens_threshold > tight.prompt_tokens_threshold


def test_prefill_replicas_pinned_to_zero_mean_aggregated_serving() -> None:
    result = plan_pool(pool(prefill={"replicas": 0}))
    assert result.deployment == "Aggregated" and result.prefill and result.prefill.replicas == 0


def test_status_has_the_crd_shape() -> None:
    result = plan_pool(pool(disaggregation={"mode": "Always"}))
    status = result.to_status()
    assert isinstance(status, PlanStatus)
    wire = status.to_wire()
    assert wire["feasible"] is True
    assert wire["prefill"]["tensorParallel"] == result.prefill.tensor_parallel  # type: ignore[union-attr]
    assert wire["promptTokensThreshold"] == result.prompt_tokens_threshold
    assert wire["rationale"] == result.rationale


def test_plan_json_carries_engine_timing_per_role_for_the_simulator() -> None:
    result = plan_pool(pool(disaggregation={"mode": "Always"}))
    document = json.loads(result.model_dump_json())
    for role in ("prefill", "decode"):
        timing = EngineTiming.model_validate(document[role]["engine_timing"])
        assert timing.kv_capacity_tokens == document[role]["kv_capacity_tokens"]
        assert timing.max_num_seqs == document[role]["max_batch"]
    assert Plan.model_validate(document) == result


def test_decode_engine_timing_predicts_the_planned_itl_band() -> None:
    result = plan_pool(pool(disaggregation={"mode": "Always"}))
    decode = result.decode
    assert decode and decode.predicted_itl_ms
    t = decode.engine_timing
    context = 3000 + 300 / 2
    full = t.decode_step_base_ms + t.decode_ms_per_seq * decode.max_batch
    full += t.decode_ms_per_kilotoken * decode.max_batch * context / 1000
    assert full <= 40 * 1.05  # the largest planned batch steps within the ITL target


def test_architecture_override_plans_an_uncatalogued_model() -> None:
    spec = pool(
        model={
            "name": "acme/custom-13b",
            "architecture": {
                "numLayers": 40, "hiddenSize": 5120, "numAttentionHeads": 40, "numKvHeads": 40,
                "intermediateSize": 13824, "vocabSize": 32000, "totalParamsB": 13.0,
            },
        }
    )  # fmt: skip
    result = plan_pool(spec)
    assert result.feasible and result.model == "acme/custom-13b"


def test_hf_config_request_plans_without_the_catalog() -> None:
    config = {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
    }  # fmt: skip
    request = PlanRequest(
        model="local/llama-like", hf_config=config, prefill_gpus=("L40S",), decode_gpus=("L40S",)
    )
    result = plan(request)
    assert result.feasible and result.decode and result.decode.gpu_type == "L40S"


def test_unknown_model_in_a_pool_raises_the_planner_error() -> None:
    with pytest.raises(tandem.planner.UnknownModelError):
        plan_pool(pool(model={"name": "acme/unknown-7b"}))


def test_prefix_reuse_shortens_prefill_work_and_never_a_decoders() -> None:
    """LMCache pools' decoders run without prefix caching (operator/build/engine.py), so the plan
    credits prefix reuse to prefillers only: the decode role comes out the same, given a PD buffer
    that takes either's handoffs (a planned one follows the prefills that hold it:
    planner/pd_buffer.py)."""
    roomy = {"mode": "Always", "kvTransfer": {"lmcache": {"decoderBufferBytes": 8 * 1024**3}}}
    without = plan_pool(pool(disaggregation=roomy))
    reused = plan_pool(pool(disaggregation=roomy, workload={"prefixReuseFraction": 0.8}))
    assert reused.decode == without.decode
    assert without.prefill is not None and reused.prefill is not None
    assert reused.prefill.gpus < without.prefill.gpus
