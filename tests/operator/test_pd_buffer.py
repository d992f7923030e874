"""The decoders' LMCache PD buffer as the operator renders it: the plan's size (planner/pd_buffer.py)
in the decode ConfigMap and the pool's status, which the router reads; a pin wins; a pin too small
for one p90 prompt is Infeasible with the reason."""

from __future__ import annotations

from typing import Any

import yaml
from operator_cases import find
from operator_decisions import pool_body, run


def decoder_buffer(objects: list[dict[str, Any]]) -> int:
    config_map = find(objects, "ConfigMap", "sim-llama-decode-lmcache")
    size: int = yaml.safe_load(config_map["data"]["lmcache.yaml"])["pd_buffer_size"]
    return size


def test_the_planned_buffer_is_rendered_and_published() -> None:
    decision = run(pool_body())
    assert decision.objects is not None and decision.plan is not None, decision.problem
    assert decision.plan.decode is not None and decision.plan.decode.pd_buffer_bytes is not None
    assert decoder_buffer(decision.objects) == decision.plan.decode.pd_buffer_bytes


def test_a_pinned_buffer_is_rendered() -> None:
    decision = run(pool_body(disaggregation__kvTransfer__lmcache={"decoderBufferBytes": 3 * 1024**3}))
    assert decision.objects is not None, decision.problem
    assert decoder_buffer(decision.objects) == 3 * 1024**3


def test_a_pinned_buffer_below_one_p90_prompt_is_infeasible() -> None:
    decision = run(pool_body(disaggregation__kvTransfer__lmcache={"decoderBufferBytes": 256 * 1024**2}))
    assert decision.objects is None and decision.problem is not None
    assert decision.problem.reason == "Infeasible", decision.problem
    assert "pinned decoderBufferBytes 268435456 holds no p90 prompt's KV" in decision.problem.message
