"""The chart's Grafana dashboard queries metrics Tandem really exports, and has the promised panels."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from prometheus_client import CollectorRegistry

from tandem.operator.metrics import OperatorMetrics
from tandem.router.metrics import RouterMetrics
from tandem.sim.metrics import SimMetrics

CHART = Path(__file__).resolve().parent.parent / "charts" / "tandem"
DASHBOARD = CHART / "dashboards" / "tandem.json"
# kube-state-metrics' Deployment series: replicas per role come from the roles' Deployments.
KUBE_STATE_METRICS = {"kube_deployment_spec_replicas", "kube_deployment_status_replicas_ready"}
_METRIC = re.compile(r"\b((?:tandem_|vllm:|kube_)[A-Za-z0-9_:]+)")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def series_names(registry: CollectorRegistry) -> set[str]:
    """The series names a registry exposes (counter families gain _total, histograms _bucket ...)."""
    return {
        family.name + suffix for family in registry.collect() for suffix in _SUFFIXES.get(family.type, ("",))
    }


def exported() -> set[str]:
    router = RouterMetrics()
    router.track([], dict)  # the live-state families (endpoints, queue depth)
    registries = [
        router.registry,
        OperatorMetrics(statuses=list, queue_depth=lambda: 0).registry,
        SimMetrics("model").registry,
    ]
    return set().union(*(series_names(r) for r in registries)) | KUBE_STATE_METRICS


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(found: Iterable[dict[str, Any]]) -> list[str]:
    return [target["expr"] for panel in found for target in panel["targets"]]


def test_dashboard_queries_only_metrics_tandem_exports() -> None:
    queried = {name for expr in expressions(panels()) for name in _METRIC.findall(expr)}
    assert queried, "no metric found in the dashboard's queries"
    assert queried - exported() == set()


def test_dashboard_has_the_promised_panels() -> None:
    def panel_using(*fragments: str) -> dict[str, Any]:
        matches = [p for p in panels() if any(all(f in e for f in fragments) for e in expressions([p]))]
        assert matches, f"no panel queries {fragments}"
        return matches[0]

    panel_using("tandem_router_requests_total", "by (route)")
    for latency, slo in (
        ("tandem_router_time_to_first_token_seconds_bucket", "$ttft_slo_ms"),
        ("vllm:inter_token_latency_seconds_bucket", "$itl_slo_ms"),
    ):
        panel = panel_using(latency, "histogram_quantile(0.9")
        assert any(slo in e for e in expressions([panel])), f"{latency} is drawn without its SLO line"
    panel_using("tandem_router_handoff_wait_seconds_bucket", "histogram_quantile")
    panel_using("tandem_router_queue_depth")
    panel_using("tandem_router_endpoint_healthy", "role")
    panel_using("kube_deployment_status_replicas_ready", "prefill|decode")


def test_every_panel_uses_the_selected_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "pool", "ttft_slo_ms", "itl_slo_ms"} <= variables
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_config_map_carries_the_dashboard_unchanged() -> None:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({"dashboard": {"enabled": True}}, name="demo", namespace="monitoring")
    config_map = yaml.safe_load(rendered["tandem/templates/dashboard.yaml"])
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["tandem.json"]) == json.loads(DASHBOARD.read_text())
