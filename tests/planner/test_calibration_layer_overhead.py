"""`layer_overhead_us`: a fixed time per layer and forward pass, in prefill, decode and the engine
timing the simulator receives; zero unless a calibration sets it."""

from __future__ import annotations

import pytest

from tandem.planner import cost, load_calibration, load_catalog
from tandem.planner.layouts import Layout
from tandem.planner.timing import prefill_coefficients

CATALOG = load_catalog()
A100 = CATALOG.gpu("A100-80GB")  # no fitted file: class defaults
LLAMA_70B = CATALOG.model("meta-llama/Llama-3.1-70B")
BASE = load_calibration(A100)
WITH_FLOOR = BASE.model_copy(update={"layer_overhead_us": 50.0})
FLOOR_MS = LLAMA_70B.num_layers * 50.0 / 1000  # 80 layers: 4 ms


def test_class_defaults_have_no_layer_overhead() -> None:
    assert BASE.layer_overhead_us == 0


@pytest.mark.parametrize(("tp", "pp", "lengths"), [(4, 1, [128]), (8, 1, [512, 4096]), (4, 2, [2000])])
def test_layer_overhead_adds_layers_times_it_to_a_prefill(tp: int, pp: int, lengths: list[int]) -> None:
    plain = cost.prefill_time_ms(LLAMA_70B, A100, tp, pp, lengths, BASE)
    floored = cost.prefill_time_ms(LLAMA_70B, A100, tp, pp, lengths, WITH_FLOOR)
    assert floored == pytest.approx(plain + FLOOR_MS)


@pytest.mark.parametrize(("batch", "context", "chunk"), [(1, 512, 0), (256, 4000, 0), (32, 2000, 512)])
def test_layer_overhead_adds_layers_times_it_to_a_step(batch: int, context: int, chunk: int) -> None:
    plain = cost.mixed_step_ms(LLAMA_70B, A100, 4, 1, batch, context, chunk, BASE)
    floored = cost.mixed_step_ms(LLAMA_70B, A100, 4, 1, batch, context, chunk, WITH_FLOOR)
    assert floored == pytest.approx(plain + FLOOR_MS)


def test_engine_timing_carries_the_layer_overhead_in_its_prefill_base() -> None:
    plain, _, _ = prefill_coefficients(LLAMA_70B, Layout(A100, 4, 1, BASE))
    floored, _, _ = prefill_coefficients(LLAMA_70B, Layout(A100, 4, 1, WITH_FLOOR))
    assert floored == pytest.approx(plain + FLOOR_MS)
