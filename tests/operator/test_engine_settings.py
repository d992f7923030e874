"""Engine settings users tune are spec fields, rendered as vLLM's flags, with the planner seeing the
same values: gpuMemoryUtilization, enforceEager, speculativeDecoding."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from operator_cases import flag
from operator_decisions import pool_body, run
from pydantic import ValidationError

from tandem.api import EngineSpec
from tandem.operator.decide import Decision
from tandem.operator.naming import Role
from tandem.sim import cli as sim_cli


def engine_args(decision: Decision, role: str) -> list[str]:
    assert decision.objects is not None, decision.problem
    workload = next(o for o in decision.objects if o["metadata"]["name"] == f"sim-llama-{role}")
    args: list[str] = workload["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


@pytest.mark.parametrize(("given", "expected"), [(None, 0.92), (0.8, 0.8)])
def test_the_memory_fraction_the_engines_get_is_the_one_the_plan_used(
    given: float | None, expected: float
) -> None:
    """vLLM's default is 0.92 (vllm/config/cache.py:215); before, the engines were told 0.9 while a
    spec had no way to set it."""
    body = pool_body(**({} if given is None else {"engine__gpuMemoryUtilization": given}))
    decision = run(body)
    assert decision.layout is not None and decision.plan is not None
    for role in Role:
        assert float(flag(engine_args(decision, role), "--gpu-memory-utilization")) == expected
        assert decision.layout.role(role).gpu_memory_utilization == expected


def test_a_smaller_memory_fraction_plans_a_smaller_kv_cache() -> None:
    default, smaller = run(pool_body()), run(pool_body(engine__gpuMemoryUtilization=0.5))
    assert default.plan is not None and smaller.plan is not None
    assert default.plan.decode is not None and smaller.plan.decode is not None
    assert smaller.plan.decode.kv_capacity_tokens < default.plan.decode.kv_capacity_tokens


def test_enforce_eager_is_rendered_only_when_asked() -> None:
    assert "--enforce-eager" not in engine_args(run(pool_body()), "decode")
    assert "--enforce-eager" in engine_args(run(pool_body(engine__enforceEager=True)), "decode")


def test_speculative_decoding_is_rendered_as_vllms_speculative_config() -> None:
    """The keys are SpeculativeConfig's fields (vllm/config/speculative.py:413-506)."""
    speculative: dict[str, Any] = {"method": "ngram", "numSpeculativeTokens": 4, "promptLookupMax": 5}
    args = engine_args(run(pool_body(engine__speculativeDecoding=speculative)), "decode")
    config = json.loads(flag(args, "--speculative-config"))
    assert config == {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 5}
    assert "--speculative-config" not in engine_args(run(pool_body()), "decode")


@pytest.mark.parametrize(
    "engine",
    [
        {"gpuMemoryUtilization": 0},
        {"gpuMemoryUtilization": 1.5},
        {"speculativeDecoding": {"numSpeculativeTokens": 3}},  # neither method nor model
        {"speculativeDecoding": {"method": "ngram", "numSpeculativeTokens": 0}},
    ],
)
def test_engine_settings_out_of_range_are_refused(engine: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EngineSpec.model_validate(engine)


def test_the_simulator_takes_the_command_line_these_settings_render() -> None:
    """A simulated pool with these settings still starts: the simulator ignores the vLLM-only flags
    and reads the rest (--gpu-memory-utilization, the plan's timing) as before."""
    body = pool_body(
        engine__gpuMemoryUtilization=0.8,
        engine__enforceEager=True,
        engine__speculativeDecoding={
            "model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B",
            "numSpeculativeTokens": 2,
        },
        disaggregation__kvTransfer={"connector": "nixl"},  # no LMCache file to hand the simulator
    )
    decision = run(body)
    args = engine_args(decision, Role.DECODE)
    parser = argparse.ArgumentParser()
    sim_cli.register(parser.add_subparsers())
    parsed = parser.parse_args(["sim", *args])
    assert parsed.gpu_memory_utilization == 0.8
    assert {"--enforce-eager", "--speculative-config"} <= set(parsed.ignored_args)
    settings = sim_cli.build_settings(parsed, {})
    assert decision.layout is not None
    assert settings.timing.max_num_seqs == decision.layout.decode.timing.max_num_seqs


def _prefix_caching(decision: Decision, role: Role) -> bool:
    """Whether the engine runs with prefix caching, as vLLM 0.33 parses its flags: a
    BooleanOptionalAction, `--enable-prefix-caching` / `--no-enable-prefix-caching`
    (vllm/engine/arg_utils.py:384-386 and 1401-1407), which the simulator's parser shares."""
    parser = argparse.ArgumentParser()
    sim_cli.register(parser.add_subparsers())
    enabled: bool = parser.parse_args(["sim", *engine_args(decision, role)]).enable_prefix_caching
    return enabled


@pytest.mark.parametrize(
    ("spec", "prefill", "decode"),
    [
        ({"disaggregation__mode": "Always"}, True, False),  # LMCache with prefillers
        ({"disaggregation__mode": "Always", "disaggregation__kvTransfer": {"connector": "nixl"}}, True, True),
        ({"disaggregation__mode": "Never"}, None, True),  # aggregated: nothing is handed off
    ],
    ids=["lmcache", "nixl", "aggregated"],
)
def test_lmcache_decoders_run_without_prefix_caching(
    spec: dict[str, Any], prefill: bool | None, decode: bool
) -> None:
    """LMCache 0.5.6 never reads, so never frees, the handed-off chunks a decoder's own prefix cache
    covers (operator/build/engine.py, `_lmcache_receiver`): LMCache decoders get
    `--no-enable-prefix-caching`; prefillers, NIXL decoders and aggregated engines keep it."""
    decision = run(pool_body(**spec))
    assert decision.layout is not None
    assert _prefix_caching(decision, Role.DECODE) is decode
    if prefill is None:
        assert decision.layout.prefill.replicas == 0
    else:
        assert _prefix_caching(decision, Role.PREFILL) is prefill
