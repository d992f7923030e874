"""The InferencePool models: wire names, defaults and rejection of bad input."""

from __future__ import annotations

import pytest
import yaml
from paths import REPO
from pydantic import ValidationError

from tandem.api import DisaggregationMode, InferencePool, InferencePoolSpec, KvConnector

EXAMPLES = REPO / "examples"


def minimal(**extra: object) -> dict[str, object]:
    return {
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "accelerator": {"type": "H100-80GB"},
        **extra,
    }


def test_minimal_spec_gets_defaults() -> None:
    spec = InferencePoolSpec.model_validate(minimal())
    assert spec.disaggregation.mode == DisaggregationMode.AUTO
    assert spec.disaggregation.prompt_tokens_threshold == "auto"
    assert spec.disaggregation.kv_transfer.connector == KvConnector.LMCACHE
    assert spec.prefill.replicas is None and spec.decode.tensor_parallel is None  # automatic
    assert spec.accelerator.gpus_per_node == 8


@pytest.mark.parametrize(
    ("mode", "named", "in_use"),
    [
        ("Auto", "lmcache", KvConnector.LMCACHE),
        ("Always", "nixl", KvConnector.NIXL),
        ("Never", "lmcache", KvConnector.NONE),  # aggregated serving hands nothing off
        ("Never", "none", KvConnector.NONE),
    ],
)
def test_the_connector_in_use_follows_the_mode(mode: str, named: str, in_use: KvConnector) -> None:
    disaggregation = {"mode": mode, "kvTransfer": {"connector": named}}
    spec = InferencePoolSpec.model_validate(minimal(disaggregation=disaggregation))
    assert spec.disaggregation.connector is in_use


@pytest.mark.parametrize("mode", ["Auto", "Always"])
def test_connector_none_is_refused_where_handoffs_may_happen(mode: str) -> None:
    disaggregation = {"mode": mode, "kvTransfer": {"connector": "none"}}
    with pytest.raises(
        ValidationError, match=f"connector none hands no KV off: it needs mode Never, not {mode}"
    ):
        InferencePoolSpec.model_validate(minimal(disaggregation=disaggregation))


def test_wire_form_is_camel_case_and_round_trips() -> None:
    spec = InferencePoolSpec.model_validate(
        minimal(slo={"ttftMs": 500, "itlMs": 30}, decode={"tensorParallel": 2})
    )
    wire = spec.to_wire()
    assert wire["slo"] == {"ttftMs": 500.0, "itlMs": 30.0, "percentile": 90.0}
    assert wire["decode"] == {"tensorParallel": 2, "extraArgs": []}
    assert InferencePoolSpec.model_validate(wire) == spec


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"disaggregation": {"mode": "Sometimes"}}, "disaggregation.mode"),
        ({"prefill": {"replicas": -1}}, "prefill.replicas"),
        ({"slo": {"itlMs": 0}}, "slo.itlMs"),
        ({"workload": {"promptTokens": {"mean": 1000, "p90": 10}}}, "workload.promptTokens"),
        ({"disaggregation": {"promptTokensThreshold": "sometimes"}}, "disaggregation.promptTokensThreshold"),
        ({"model": {}}, "model.name"),
        ({"router": {"balancePolicy": "fastest"}}, "router.balancePolicy"),
        ({"decode": {"tensorParalel": 2}}, "decode.tensorParalel"),
    ],
)
def test_bad_spec_is_rejected_naming_the_field(patch: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        InferencePoolSpec.model_validate(minimal(**patch))
    locations = {".".join(str(p) for p in e["loc"]) for e in error.value.errors()}
    assert any(loc.startswith(field) for loc in locations), locations


def test_examples_parse() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        pool = InferencePool.model_validate(yaml.safe_load(path.read_text()))
        assert pool.metadata["name"]
