"""Sizing: layouts chosen for the physics, monotone in load and targets, pins honoured, and
impossible targets reported with the number that makes them impossible."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tandem.api import DisaggregationMode, SloSpec, TokenStats, WorkloadSpec
from tandem.planner import Plan, PlanRequest, RolePins, load_calibration, load_catalog, plan
from tandem.planner.layouts import Layout
from tandem.planner.sizing import Failure, Rank, Sized, best, best_design, cheapest_first, rank_floor


def request(
    model: str = "meta-llama/Llama-3.1-70B-Instruct", gpu: str = "H100-80GB", **kw: Any
) -> PlanRequest:
    slo = SloSpec(ttft_ms=kw.pop("ttft_ms", 2000), itl_ms=kw.pop("itl_ms", 50))
    workload = WorkloadSpec(
        requests_per_second=kw.pop("rps", 2),
        prompt_tokens=TokenStats(mean=kw.pop("prompt", 2000), p90=kw.pop("prompt_p90", None)),
        output_tokens=TokenStats(mean=kw.pop("output", 256)),
    )
    return PlanRequest(
        model=model,
        prefill_gpus=(kw.pop("prefill_gpu", gpu),),
        decode_gpus=(kw.pop("decode_gpu", gpu),),
        slo=slo,
        workload=workload,
        **kw,
    )


def test_70b_bf16_gets_tensor_parallelism_on_h100() -> None:
    result = plan(request(mode=DisaggregationMode.ALWAYS))
    assert result.feasible
    assert result.prefill and result.prefill.tensor_parallel >= 2
    assert result.decode and result.decode.tensor_parallel >= 2


def test_8b_fits_a_single_h100_replica() -> None:
    result = plan(request("meta-llama/Llama-3.1-8B-Instruct", rps=1))
    assert result.feasible and result.decode
    assert result.decode.tensor_parallel == 1 and result.decode.gpus == 1


def test_405b_bf16_spans_more_than_one_node_of_8_h100() -> None:
    result = plan(request("meta-llama/Llama-3.1-405B-Instruct", rps=0.5))
    assert result.feasible and result.decode
    replica = result.decode.tensor_parallel * result.decode.pipeline_parallel
    assert replica > 8 and result.decode.pipeline_parallel >= 2 and result.decode.tensor_parallel == 8


@pytest.mark.parametrize(
    "model",
    ["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct", "mistralai/Mixtral-8x7B-v0.1"],
)
def test_more_load_never_needs_fewer_gpus(model: str) -> None:
    for mode in DisaggregationMode:
        gpus = [
            plan(request(model, rps=rps, prompt_p90=4000, mode=mode)).gpus
            for rps in (0.5, 1, 2, 4, 8, 16, 32)
        ]
        assert gpus == sorted(gpus), (mode, gpus)


@pytest.mark.parametrize("model", ["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"])
def test_tighter_itl_never_needs_fewer_decode_gpus(model: str) -> None:
    for rps in (1, 8):
        decode_gpus = []
        for itl in (100, 60, 40, 30, 25, 20, 15):
            result = plan(request(model, rps=rps, itl_ms=itl, mode=DisaggregationMode.ALWAYS))
            decode_gpus.append(result.decode.gpus if result.feasible and result.decode else 10**6)
        assert decode_gpus == sorted(decode_gpus), (rps, decode_gpus)


def test_impossible_itl_is_infeasible_with_the_real_floor() -> None:
    result = plan(request(itl_ms=5))
    assert not result.feasible
    assert result.reason
    floor = re.search(r"ITL target 5 ms is below the ([0-9.]+) ms floor of one decode step", result.reason)
    assert floor and 5 < float(floor.group(1)) < 50
    assert "H100-80GB" in result.reason


def test_impossible_ttft_is_infeasible_with_the_prefill_floor() -> None:
    result = plan(request(ttft_ms=20, prompt=16000, mode=DisaggregationMode.ALWAYS))
    assert not result.feasible and result.reason
    assert "TTFT target 20 ms is below the" in result.reason


def test_70b_on_a_single_l4_per_node_is_infeasible_with_a_reason() -> None:
    result = plan(request(gpu="L4", gpus_per_node=1, rps=1))
    assert not result.feasible
    assert result.reason and "L4" in result.reason and "floor" in result.reason
    assert result.to_status().feasible is False


def test_prefill_and_decode_may_use_different_gpu_types() -> None:
    result = plan(request(prefill_gpu="H100-80GB", decode_gpu="A100-80GB", mode=DisaggregationMode.ALWAYS))
    assert result.feasible and result.prefill and result.decode
    assert (result.prefill.gpu_type, result.decode.gpu_type) == ("H100-80GB", "A100-80GB")
    assert result.cost_per_hour_usd == pytest.approx(
        result.prefill.gpus * 12.29 + result.decode.gpus * 5.12, rel=1e-6
    )


def test_the_cheapest_of_several_gpu_types_wins_at_equal_gpu_count() -> None:
    h100_only = request("meta-llama/Llama-3.1-8B-Instruct", gpu="H100-80GB", rps=0.5)
    cheap = plan(h100_only)
    both = ("H100-80GB", "A100-80GB")
    result = plan(h100_only.model_copy(update={"prefill_gpus": both, "decode_gpus": both}))
    assert result.gpus <= cheap.gpus
    assert result.decode and result.decode.gpu_type == "A100-80GB"


def test_pinned_values_win_and_are_evaluated() -> None:
    pinned = request(
        mode=DisaggregationMode.ALWAYS,
        prefill=RolePins(tensor_parallel=8, replicas=2),
        decode=RolePins(tensor_parallel=4, replicas=3),
    )
    result = plan(pinned)
    assert result.feasible and result.prefill and result.decode
    assert (result.prefill.tensor_parallel, result.prefill.replicas) == (8, 2)
    assert (result.decode.tensor_parallel, result.decode.replicas) == (4, 3)
    assert result.decode.pinned == ("tensorParallel", "replicas")
    assert result.predicted_itl_ms is not None and result.predicted_itl_ms <= 50


def test_pinned_replicas_too_few_for_the_load_are_infeasible() -> None:
    result = plan(request(rps=80, mode=DisaggregationMode.ALWAYS, decode=RolePins(replicas=1)))
    assert not result.feasible and result.reason
    assert "pinned 1 decode replicas sustain" in result.reason


def test_pinned_tp_that_does_not_divide_the_heads_is_infeasible() -> None:
    result = plan(request(mode=DisaggregationMode.ALWAYS, decode=RolePins(tensor_parallel=3)))
    assert not result.feasible and result.reason and "TP=3" in result.reason


def test_prompts_longer_than_the_context_are_infeasible() -> None:
    result = plan(request("facebook/opt-13b", prompt=4000))
    assert not result.feasible and result.reason and "2048-token context" in result.reason


def _utilisations(result: Plan) -> list[float]:
    return [r.utilization for r in (result.prefill, result.decode) if r and r.replicas]


@pytest.mark.parametrize("rps", [0.5, 3, 12])
def test_planned_load_stays_within_capacity(rps: float) -> None:
    result = plan(request(rps=rps, prompt_p90=4500))
    assert result.feasible
    assert all(0 < u <= 1 + 1e-9 for u in _utilisations(result))
    assert result.max_requests_per_second and result.max_requests_per_second >= rps
    assert result.predicted_ttft_ms is not None and result.predicted_ttft_ms <= 2000
    assert result.predicted_itl_ms is not None and result.predicted_itl_ms <= 50


# --- The search's bound: layouts left out only where they cannot win (sizing.cheapest_first) ---
H100 = load_catalog().gpu("H100-80GB")
H100_CAL = load_calibration(H100)
TP_LAYOUTS = [Layout(H100, tp, 1, H100_CAL) for tp in (8, 1, 4, 2)]


@dataclass
class _FakeDesign:
    """A design of `replicas` replicas whose latency at the planned load is `itl_ms`."""

    layout: Layout
    replicas: int
    itl_ms: float = 10.0
    sized_calls: list[Layout] = field(default_factory=list)

    @property
    def rank(self) -> Rank:
        return rank_floor(self.layout, self.replicas)

    def sized(self) -> Sized:
        self.sized_calls.append(self.layout)
        return Sized(self.layout, self.replicas, 1.0, 1, 1.0, 1, 1, predicted_itl_ms=self.itl_ms)


def _designer(
    replicas: dict[int, int | None], designed: list[int]
) -> Callable[[Layout], _FakeDesign | Failure]:
    """Designs with the given replicas per TP (None: a failure of floor TP ms), noting each TP designed."""

    def design(layout: Layout) -> _FakeDesign | Failure:
        designed.append(layout.tp)
        count = replicas[layout.tp]
        return Failure(f"TP={layout.tp}", float(layout.tp)) if count is None else _FakeDesign(layout, count)

    return design


@pytest.mark.parametrize(
    ("replicas", "pins", "designed"),
    [
        # One TP=1 replica serves the load: no larger replica can take fewer GPUs.
        ({1: 1, 2: 1, 4: 1, 8: 1}, RolePins(), [1]),
        # TP=1 needs 2 replicas: one TP=2 replica takes as many GPUs and may tie, TP=4 cannot.
        ({1: 2, 2: 1, 4: 1, 8: 1}, RolePins(), [1, 2]),
        # TP=1 fails: the next floors are designed until one ranks below the rest.
        ({1: None, 2: 3, 4: 1, 8: 1}, RolePins(), [1, 2, 4]),
        # Pinned to 2 replicas the floors are two replicas' GPUs.
        ({1: 2, 2: 2, 4: 2, 8: 2}, RolePins(replicas=2), [1]),
    ],
)
def test_layouts_that_cannot_rank_first_are_not_designed(
    replicas: dict[int, int | None], pins: RolePins, designed: list[int]
) -> None:
    seen: list[int] = []
    cheapest_first(TP_LAYOUTS, _designer(replicas, seen), pins)
    assert seen == designed


def test_with_no_feasible_design_every_layout_is_designed_and_the_nearest_miss_reported() -> None:
    seen: list[int] = []
    designs = cheapest_first(TP_LAYOUTS, _designer(dict.fromkeys((1, 2, 4, 8)), seen), RolePins())
    assert sorted(seen) == [1, 2, 4, 8]
    assert [d.reason for d in designs if isinstance(d, Failure)] == ["TP=8", "TP=1", "TP=4", "TP=2"]
    nearest = best_design(designs)
    assert isinstance(nearest, Failure) and nearest.reason == "TP=1"


def test_the_bounded_choice_is_the_choice_over_every_layout() -> None:
    replicas: dict[int, int | None] = {1: 4, 2: 2, 4: 1, 8: 1}  # TP 1, 2 and 4 take 4 GPUs
    seen: list[int] = []
    bounded = best_design(cheapest_first(TP_LAYOUTS, _designer(replicas, seen), RolePins()))
    every = best(
        [d if isinstance(d, Failure) else d.sized() for d in map(_designer(replicas, []), TP_LAYOUTS)]
    )
    assert isinstance(bounded, Sized) and isinstance(every, Sized)
    assert (bounded.layout, bounded.replicas) == (every.layout, every.replicas)
    assert sorted(seen) == [1, 2, 4]


def test_only_the_designs_of_the_lowest_rank_are_sized_and_their_latency_breaks_the_tie() -> None:
    tied = [_FakeDesign(TP_LAYOUTS[1], 2, itl_ms=30.0), _FakeDesign(TP_LAYOUTS[3], 1, itl_ms=20.0)]
    dearer = _FakeDesign(TP_LAYOUTS[2], 1)
    chosen = best_design([*tied, dearer, Failure("no fit", 1.0)])
    assert isinstance(chosen, Sized) and chosen.layout.tp == 2
    assert [d.sized_calls for d in tied] == [[TP_LAYOUTS[1]], [TP_LAYOUTS[3]]]
    assert dearer.sized_calls == []
