"""The autoscaler's API: ``spec.autoscaling`` (how replicas follow live traffic) and
``status.autoscaling`` (what it saw and decided). docs/autoscaling.md explains both.

Durations are Kubernetes-style strings, as ``metav1.Duration`` writes them: one or more
``<number><unit>`` with units ``h``, ``m``, ``s`` and ``ms`` (``15s``, ``2m``, ``1m30s``, ``1.5h``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from tandem.api.base import ApiModel
from tandem.api.bounds import MAX_REPLICAS

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|h|m|s))+$"
_SEGMENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
MIN_INTERVAL_SECONDS = 1.0
# Bounds of the learned correction: it only ever derates (a plan that proves pessimistic keeps its
# headroom), and by at most this much (a larger gap is a calibration to fix, not to paper over).
MIN_CORRECTION = 1.0
MAX_CORRECTION = 2.0


def duration_seconds(text: str) -> float:
    """Seconds of a duration string (``2m`` → 120.0); ValueError for anything else."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 15s, 2m or 1m30s")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _SEGMENT.findall(text))


Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]


class AutoscalingMode(StrEnum):
    OFF = "Off"  # replicas come from the plan (or the spec's pins)
    PLANNER = "Planner"  # the operator re-plans replicas from the routers' live traffic
    EXTERNAL = "External"  # an HPA or KEDA owns the engines' replicas after creation


class MinReplicas(ApiModel):
    prefill: int = Field(default=0, ge=0, le=MAX_REPLICAS)
    decode: int = Field(
        default=1, ge=1, le=MAX_REPLICAS, description="At least 1: decode serves every request."
    )


class MaxReplicas(ApiModel):
    prefill: int = Field(default=8, ge=0, le=MAX_REPLICAS)
    decode: int = Field(default=8, ge=1, le=MAX_REPLICAS)


class MetricsSource(StrEnum):
    ROUTER = "Router"  # the operator scrapes the pool's router pods
    PROMETHEUS = "Prometheus"  # the operator queries a Prometheus that scrapes them


class PrometheusSource(ApiModel):
    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        description="Base URL of the Prometheus HTTP API, path prefix included "
        "(http://prometheus.monitoring:9090, https://thanos/prometheus).",
    )
    selector: str | None = Field(
        default=None,  # not "": Kubernetes 1.20 refuses an empty-string default in a CRD
        max_length=1024,
        pattern=r"^[^{}]*$",
        description='Label matchers added to every series selector, beside pool="<name>" '
        '(e.g. namespace="llm",cluster="east").',
    )


class AutoscalingMetrics(ApiModel):
    source: MetricsSource = Field(
        default=MetricsSource.ROUTER,
        description="Router: the operator scrapes the pool's router pods. Prometheus: it queries one.",
    )
    prometheus: PrometheusSource | None = Field(default=None, description="With source Prometheus.")

    @model_validator(mode="after")
    def _prometheus_with_its_source(self) -> AutoscalingMetrics:
        if self.source == MetricsSource.PROMETHEUS and self.prometheus is None:
            raise ValueError("source Prometheus needs prometheus.url")
        return self


class AutoscalingSpec(ApiModel):
    """How prefill and decode replicas follow live traffic (docs/autoscaling.md)."""

    mode: AutoscalingMode = Field(
        default=AutoscalingMode.OFF,
        description="Off: replicas from the plan or the pins (quote it in YAML, where a bare Off reads "
        "as false). Planner: the operator re-plans them from live traffic. External: an HPA or KEDA "
        "sets the engines' replicas after creation.",
    )
    min_replicas: MinReplicas = Field(default_factory=MinReplicas, description="With mode Planner.")
    max_replicas: MaxReplicas = Field(default_factory=MaxReplicas, description="With mode Planner.")
    interval: Duration = Field(default="15s", description="How often the autoscaler decides (at least 1s).")
    window: Duration = Field(
        default="2m", description="How much traffic each decision looks at (at least interval)."
    )
    scale_up_stabilization: Duration = Field(
        default="30s", description="A scale-up goes to the fewest replicas the load needed over this long."
    )
    scale_down_stabilization: Duration = Field(
        default="5m", description="A scale-down goes to the most replicas the load needed over this long."
    )
    metrics: AutoscalingMetrics = Field(
        default_factory=AutoscalingMetrics, description="Where the traffic is read (mode Planner)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalingSpec:
        for role in ("prefill", "decode"):
            low, high = getattr(self.min_replicas, role), getattr(self.max_replicas, role)
            if low > high:
                raise ValueError(f"minReplicas.{role} ({low}) is above maxReplicas.{role} ({high})")
        if self.interval_seconds < MIN_INTERVAL_SECONDS:
            raise ValueError(f"interval {self.interval} is below {MIN_INTERVAL_SECONDS:g}s")
        if self.window_seconds < self.interval_seconds:
            raise ValueError(f"window {self.window} is shorter than interval {self.interval}")
        return self

    @property
    def interval_seconds(self) -> float:
        return duration_seconds(self.interval)

    @property
    def window_seconds(self) -> float:
        return duration_seconds(self.window)

    @property
    def scale_up_seconds(self) -> float:
        return duration_seconds(self.scale_up_stabilization)

    @property
    def scale_down_seconds(self) -> float:
        return duration_seconds(self.scale_down_stabilization)


# -- status ----------------------------------------------------------------------------------------


class ObservedWorkload(ApiModel):
    """The traffic of the last window, all router replicas summed."""

    requests_per_second: float = Field(ge=0)
    prompt_tokens_mean: float | None = Field(default=None, ge=0)
    prompt_tokens_p90: float | None = Field(default=None, ge=0)
    output_tokens_mean: float | None = Field(default=None, ge=0)
    output_tokens_p90: float | None = Field(default=None, ge=0)
    ttft_p90_ms: float | None = Field(default=None, ge=0)
    itl_p90_ms: float | None = Field(default=None, ge=0)
    slo_attainment: float | None = Field(
        default=None, ge=0, le=1, description="Share of the window's requests that met both targets."
    )


class ReplicaCounts(ApiModel):
    prefill: int = Field(ge=0)
    decode: int = Field(ge=0)


class Correction(ApiModel):
    """How much slower than planned each role measured: the re-plan serves this many times the load."""

    prefill: float = Field(default=MIN_CORRECTION, ge=MIN_CORRECTION, le=MAX_CORRECTION)
    decode: float = Field(default=MIN_CORRECTION, ge=MIN_CORRECTION, le=MAX_CORRECTION)


class RoleShape(ApiModel):
    gpu_type: str
    tensor_parallel: int = Field(ge=1)
    pipeline_parallel: int = Field(ge=1)
    replicas: int = Field(ge=0)


class LayoutRecommendation(ApiModel):
    """A layout the planner prefers for the observed traffic; never applied by the autoscaler."""

    message: str
    deployment: str = Field(description="Disaggregated or Aggregated.")
    prefill: RoleShape | None = None
    decode: RoleShape | None = None


class AutoscalingStatus(ApiModel):
    observed: ObservedWorkload | None = None
    desired: ReplicaCounts | None = None
    correction: Correction | None = None
    last_scale_time: str | None = Field(default=None, description="RFC 3339: when desired last changed.")
    last_decision: str | None = Field(default=None, description="The last decision and why, in one line.")
    recommendation: LayoutRecommendation | None = None
