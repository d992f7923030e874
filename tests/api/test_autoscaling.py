"""spec.autoscaling: the issue's defaults, Kubernetes-style durations, and the combinations refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tandem.api import AutoscalingMode, InferencePoolSpec, MetricsSource
from tandem.api.autoscaling import AutoscalingSpec, duration_seconds


def test_the_defaults_are_off_with_the_documented_knobs() -> None:
    spec = InferencePoolSpec.model_validate({"model": {"name": "m"}, "accelerator": {"type": "H100-80GB"}})
    scaling = spec.autoscaling
    assert scaling.mode == AutoscalingMode.OFF
    assert (scaling.min_replicas.prefill, scaling.min_replicas.decode) == (0, 1)
    assert (scaling.max_replicas.prefill, scaling.max_replicas.decode) == (8, 8)
    assert (scaling.interval_seconds, scaling.window_seconds) == (15, 120)
    assert (scaling.scale_up_seconds, scaling.scale_down_seconds) == (30, 300)
    assert scaling.metrics.source == MetricsSource.ROUTER


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("2m", 120), ("1m30s", 90), ("1.5h", 5400), ("500ms", 0.5), ("1h2m3s", 3723), ("0s", 0)],
)
def test_durations_read_as_go_and_kubernetes_write_them(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["15", "1d", "-1s", "s", "1 m", "", "2m ", "1.s", "P1M"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds(text)
    with pytest.raises(ValidationError):
        AutoscalingSpec.model_validate({"window": text})


@pytest.mark.parametrize(
    ("scaling", "message"),
    [
        ({"minReplicas": {"prefill": 3}, "maxReplicas": {"prefill": 2}}, "minReplicas.prefill (3) is above"),
        ({"interval": "30s", "window": "20s"}, "window 20s is shorter than interval 30s"),
        ({"interval": "500ms"}, "interval 500ms is below 1s"),
        ({"metrics": {"source": "Prometheus"}}, "source Prometheus needs prometheus.url"),
        ({"minReplicas": {"decode": 0}}, "greater than or equal to 1"),
        ({"mode": False}, "Input should be 'Off', 'Planner' or 'External'"),  # YAML's bare Off
        (
            {"metrics": {"source": "Prometheus", "prometheus": {"url": "prometheus:9090"}}},
            "String should match",
        ),
        (
            {"metrics": {"source": "Prometheus", "prometheus": {"url": "http://p", "selector": "}x{"}}},
            "String should match",
        ),
    ],
)
def test_combinations_that_cannot_work_are_refused(scaling: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AutoscalingSpec.model_validate(scaling)
