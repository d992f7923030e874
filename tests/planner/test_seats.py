"""Seats and sequences in flight: vLLM admits a waiting request only while fewer than max_num_seqs
run (vllm/v1/core/sched/scheduler.py:1072-1074), so a plan must leave its seats above the count in
flight at the planned load, not at it; and the step-time and length facts the sizing rests on."""

from __future__ import annotations

import math

import pytest

from tandem.api import DisaggregationMode, TokenStats
from tandem.planner import plan
from tandem.planner.aggregated import mean_step_ms
from tandem.planner.lengths import LengthDistribution
from tandem.planner.sizing import mean_within
from tandem.sim.twin import REFERENCE_WORKLOADS, Workload

Z99 = 2.326


def _workload(name: str) -> Workload:
    return next(w for w in REFERENCE_WORKLOADS if w.name == name)


def test_the_aggregated_seats_hold_the_peaks_in_flight_at_the_planned_rate() -> None:
    """The first plan of issue #13 capped its replica at 32 sequences where Little's law put about
    35 in flight; its queue grew without bound. No step is longer than the ITL target, so
    rate x output x target bounds the mean count; its Poisson p99 must fit the seats."""
    workload = _workload("issue-1")
    result = plan(workload.request(DisaggregationMode.NEVER))
    role = result.decode
    assert result.feasible and role
    mean = workload.rps / role.replicas * workload.output_tokens * workload.itl_ms / 1000
    assert role.max_batch >= mean + Z99 * math.sqrt(mean)


@pytest.mark.parametrize("name", ["rag-8b", "chat-70b", "code-70b"])
def test_a_decode_replica_at_its_rated_rate_keeps_the_percentile_count_within_its_seats(name: str) -> None:
    """Rated for its mean to fill max_num_seqs, a decode replica would sit at its cap half the
    time (arrivals waiting for a seat, steps over the target). At the rate it reports, the count in
    flight, rate x output x the step of a full batch, must leave room for its percentile."""
    workload = _workload(name)
    result = plan(workload.request(DisaggregationMode.ALWAYS))
    decode = result.decode
    assert result.feasible and decode
    timing = decode.engine_timing
    context = workload.prompt_tokens + workload.output_tokens / 2
    full_step_ms = (
        timing.decode_step_base_ms
        + timing.decode_ms_per_seq * decode.max_batch
        + timing.decode_ms_per_kilotoken * decode.max_batch * context / 1000
    )
    rate = decode.max_requests_per_second / decode.replicas
    mean = rate * workload.output_tokens * full_step_ms / 1000
    z = 1.2816  # p90, the SLO default
    assert mean + z * math.sqrt(mean) <= decode.max_batch * 1.02


def test_mean_within_puts_the_percentile_at_the_limit() -> None:
    for limit, z in ((32, 1.2816), (500, 2.326), (1, 1.0)):
        n = mean_within(limit, z)
        assert n + z * math.sqrt(n) == pytest.approx(limit)


def test_a_sequence_gets_a_token_per_step_so_the_mean_step_weighs_steps_not_time() -> None:
    """Half the time in 30 ms steps, half in 10 ms ones: three short steps for every long one."""
    assert mean_step_ms(0.5, 30, 10) == pytest.approx((30 + 3 * 10) / 4)
    assert mean_step_ms(0.0, 30, 10) == 10 and mean_step_ms(1.0, 30, 10) == 30


def test_token_positions_of_fixed_length_prompts_are_uniform() -> None:
    """Under causal attention token i of a prompt attends to i keys: for prompts of L tokens the
    positions are uniform on [0, L), their mean L/2 and their 90th percentile 0.9 L."""
    lengths = LengthDistribution.from_stats(TokenStats(mean=1000))
    assert lengths.attention_span == pytest.approx(500)
    assert lengths.span_quantile(90) == pytest.approx(900, rel=1e-4)
    spread = LengthDistribution.from_stats(TokenStats(mean=2000, p90=4000))
    assert spread.span_quantile(90) > spread.attention_span > spread.span_quantile(10)
