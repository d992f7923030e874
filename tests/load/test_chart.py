"""The chart is a PNG with a panel per figure, and one more for the pool's replicas when read."""

from __future__ import annotations

from pathlib import Path

import pytest
from load_records import RECORDS, SLO
from PIL import Image

from tandem.load.chart import draw_chart
from tandem.load.replicas import ReplicaSample
from tandem.load.schedule import RateSchedule
from tandem.load.stats import windows

REPLICAS = [
    ReplicaSample(t, role, desired, ready)
    for t, decode, ready in ((0.0, 1, 1), (1.0, 2, 1), (2.0, 2, 2), (3.0, 3, 2))
    for role, desired, ready in (("decode", decode, ready), ("prefill", 1, 1))
]


@pytest.mark.parametrize(("replicas", "panels"), [((), 4), (REPLICAS, 5)])
def test_the_chart_is_a_png_with_a_panel_per_figure(
    tmp_path: Path, replicas: list[ReplicaSample], panels: int
) -> None:
    path = tmp_path / "run.png"
    draw_chart(path, windows(RECORDS, 1.0, SLO), SLO, "a run", RateSchedule.parse("1:2,1-3:2"), replicas)
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width == 1000 and height == round(100 * (2.3 * panels + 0.6))


def test_a_run_with_no_request_still_draws(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    draw_chart(path, windows([], 1.0, SLO), SLO, "nothing", None, ())
    with Image.open(path) as image:
        assert image.format == "PNG"
