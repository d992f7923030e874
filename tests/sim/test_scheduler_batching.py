"""Continuous batching without time: budgets, seat limits, KV capacity, preemption, prefix caching,
held blocks, and the step cost model."""

from __future__ import annotations

import pytest

from tandem.api.timing import EngineTiming
from tandem.sim.scheduler import Chunk, Scheduler, Sequence, StepPlan, step_ms


def run_step(scheduler: Scheduler) -> StepPlan:
    """Schedule and complete one step; sampled sequences get their token."""
    plan = scheduler.schedule()
    for seq in scheduler.complete(plan):
        seq.num_generated += 1
    return plan


def test_long_prompts_are_prefilled_in_chunks_of_the_token_budget() -> None:
    scheduler = Scheduler(EngineTiming(max_num_batched_tokens=100), prefix_caching=False)
    seq = Sequence("a", 250)
    scheduler.add(seq)
    sizes = [run_step(scheduler).chunks[0].num_tokens for _ in range(3)]
    assert sizes == [100, 100, 50]
    assert seq.num_generated == 1  # the first token comes with the last chunk


def test_decodes_go_first_and_prefill_takes_what_is_left() -> None:
    scheduler = Scheduler(EngineTiming(max_num_batched_tokens=64), prefix_caching=False)
    decoding = Sequence("d", 8)
    scheduler.add(decoding)
    run_step(scheduler)
    scheduler.add(Sequence("p", 500))
    plan = run_step(scheduler)
    assert [(c.seq.request_id, c.num_tokens, c.decode) for c in plan.chunks] == [
        ("d", 1, True),
        ("p", 63, False),
    ]


def test_no_more_than_max_num_seqs_run_at_once() -> None:
    scheduler = Scheduler(EngineTiming(max_num_seqs=2), prefix_caching=False)
    for name in "abc":
        scheduler.add(Sequence(name, 4))
    plan = run_step(scheduler)
    assert [seq.request_id for seq in plan.admitted] == ["a", "b"]
    assert [seq.request_id for seq in scheduler.waiting] == ["c"]


def test_a_full_kv_cache_keeps_requests_waiting_until_blocks_free() -> None:
    scheduler = Scheduler(EngineTiming(kv_capacity_tokens=64), prefix_caching=False)  # 4 blocks of 16
    first, second = Sequence("a", 40), Sequence("b", 40)  # 3 blocks each
    scheduler.add(first)
    scheduler.add(second)
    run_step(scheduler)
    assert scheduler.running == [first] and list(scheduler.waiting) == [second]
    scheduler.finish(first)
    assert run_step(scheduler).admitted == (second,)


def test_growing_sequences_preempt_the_latest_admitted() -> None:
    scheduler = Scheduler(EngineTiming(kv_capacity_tokens=64), prefix_caching=False)
    early, late = Sequence("early", 32), Sequence("late", 32)  # 2 blocks each: the cache is full
    scheduler.add(early)
    scheduler.add(late)
    run_step(scheduler)  # both prefilled, 33 tokens each: each needs a third block to go on
    plan = scheduler.schedule()
    assert plan.preempted == (late,)
    assert late.num_computed == 0 and scheduler.waiting[0] is late
    assert [c.seq for c in plan.chunks] == [early]


def test_a_cached_prefix_is_not_computed_again() -> None:
    scheduler = Scheduler(EngineTiming())
    hashes = tuple(range(10))
    first = Sequence("a", 160, hashes)
    scheduler.add(first)
    run_step(scheduler)
    scheduler.finish(first)
    again = Sequence("b", 170, hashes)
    scheduler.add(again)
    plan = scheduler.schedule()
    assert plan.chunks[0].start == 160 and plan.chunks[0].num_tokens == 10
    assert (plan.prefix_query_tokens, plan.prefix_hit_tokens) == (170, 160)


def test_external_kv_leaves_one_prompt_token_to_compute() -> None:
    scheduler = Scheduler(EngineTiming(), prefix_caching=False)
    scheduler.add(Sequence("a", 300, external_tokens=300))
    assert [(c.start, c.num_tokens) for c in scheduler.schedule().chunks] == [(299, 1)]


def test_held_blocks_stay_used_until_released() -> None:
    scheduler = Scheduler(EngineTiming(kv_capacity_tokens=160), prefix_caching=False)
    seq = Sequence("a", 64)
    scheduler.add(seq)
    run_step(scheduler)
    scheduler.finish(seq, hold=True)
    assert scheduler.free_blocks == 6  # 64 prompt tokens: 4 blocks
    assert scheduler.release("a") and scheduler.free_blocks == 10
    assert not scheduler.release("a")


def test_a_mixed_step_is_one_forward_pass_not_a_prefill_plus_a_decode() -> None:
    """vLLM V1 runs a step's decodes and prefill chunks as one batch, one forward pass
    (vllm/v1/core/sched/scheduler.py:700-710, vllm/v1/worker/gpu_model_runner.py:1937, 4173): the
    step takes the longer of the decode bound and the compute of all its tokens, not their sum."""
    timing = EngineTiming(
        prefill_base_ms=5,
        prefill_ms_per_token=0.1,
        prefill_ms_per_token_sq=0.001,
        decode_step_base_ms=8,
        decode_ms_per_seq=0.5,
        decode_ms_per_kilotoken=2,
    )
    prefill = Chunk(Sequence("p", 100), start=0, num_tokens=100, decode=False)
    decodes = [Chunk(Sequence(f"d{i}", 10), start=999, num_tokens=1, decode=True) for i in range(4)]
    assert step_ms(StepPlan((prefill,)), timing) == 5 + 10 + 10
    assert step_ms(StepPlan(tuple(decodes)), timing) == 8 + 2 + 2 * 4000 / 1000
    # Compute-bound: the 100 prompt tokens and the 4 decoding ones pass the linear layers together.
    assert step_ms(StepPlan((prefill, *decodes)), timing) == pytest.approx(5 + 0.1 * 104 + 10)
    # A one-token chunk (a request whose KV came from a prefiller) rides along a decode batch.
    handed_off = Chunk(Sequence("h", 3000), start=2999, num_tokens=1, decode=False)
    assert step_ms(StepPlan((handed_off, *decodes)), timing) == step_ms(StepPlan(tuple(decodes)), timing)


def test_a_request_is_admitted_only_when_its_whole_sequence_fits_the_kv_cache() -> None:
    """vLLM admits a waiting request only if the blocks of its full sequence are free, not only its
    first chunk's (scheduler_reserve_full_isl, on by default: vllm/config/scheduler.py:190-194,
    vllm/v1/core/sched/scheduler.py:1449, vllm/v1/core/kv_cache_manager.py:531-547)."""
    timing = EngineTiming(kv_capacity_tokens=160, max_num_batched_tokens=128)  # 10 blocks of 16
    scheduler = Scheduler(timing, prefix_caching=False)
    first, second = Sequence("a", 96), Sequence("b", 96)  # 6 blocks each
    scheduler.add(first)
    scheduler.add(second)
    plan = run_step(scheduler)  # 96 tokens of `a`; 32 of budget left would hold 2 blocks of `b`
    assert plan.admitted == (first,) and list(scheduler.waiting) == [second]
    assert scheduler.free_blocks == 4
