"""The chart's Grafana dashboard: every query is PromQL (parsed by promql-parser, a port of
Prometheus' own parser), names only series Tandem (or kube-state-metrics) really exports, and the
promised panels are there."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import helm_python as helm
import promql_parser
import yaml
from paths import REPO
from prometheus_client import CollectorRegistry

from tandem.operator.metrics import OperatorMetrics
from tandem.router.metrics import RouterMetrics
from tandem.sim.metrics import SimMetrics

CHART = REPO / "charts" / "tandem"
DASHBOARD = CHART / "dashboards" / "tandem.json"
# kube-state-metrics' Deployment series: replicas per role come from the roles' Deployments.
KUBE_STATE_METRICS = {"kube_deployment_spec_replicas", "kube_deployment_status_replicas_ready"}
# Grafana's variables, as Grafana substitutes them before the query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$pool": "chat|code",
    "$ttft_slo_ms": "1000",
    "$itl_slo_ms": "40",
    "$slo_percentile": "90",
}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def series_names(registry: CollectorRegistry) -> set[str]:
    """The series names a registry exposes (counter families gain _total, histograms _bucket ...)."""
    return {
        family.name + suffix for family in registry.collect() for suffix in _SUFFIXES.get(family.type, ("",))
    }


def exported() -> set[str]:
    router = RouterMetrics()
    router.track([], dict, list)  # the live-state families (endpoints, queue depth, PD buffers)
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


def parsed(expr: str) -> promql_parser.Expr:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return promql_parser.parse(expr)  # raises ValueError on what Prometheus would refuse


def selected(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, visit)
    return found


def test_every_query_is_promql() -> None:
    for expr in expressions(panels()):
        parsed(expr)


def test_every_quantile_keeps_the_bucket_label() -> None:
    """histogram_quantile over a sum that drops `le` answers nothing: the classic broken panel."""
    for expr in expressions(panels()):
        if "histogram_quantile" in expr:
            assert re.search(r"by \([^)]*\ble\b", expr), expr


def test_dashboard_queries_only_metrics_tandem_exports() -> None:
    queried = {str(s.name) for expr in expressions(panels()) for s in selected(parsed(expr))}
    assert queried, "no metric found in the dashboard's queries"
    assert queried - exported() == set()


def test_dashboard_has_the_promised_panels() -> None:
    def panel_using(*fragments: str) -> dict[str, Any]:
        matches = [p for p in panels() if any(all(f in e for f in fragments) for e in expressions([p]))]
        assert matches, f"no panel queries {fragments}"
        return matches[0]

    panel_using("tandem_router_requests_total", "by (route)")
    for latency, slo in (
        ("tandem_router_ttft_seconds_bucket", "$ttft_slo_ms"),
        ("tandem_router_itl_seconds_bucket", "$itl_slo_ms"),
        ("vllm:inter_token_latency_seconds_bucket", "$itl_slo_ms"),
    ):
        panel = panel_using(latency, "histogram_quantile(0.9")
        assert any(slo in e for e in expressions([panel])), f"{latency} is drawn without its SLO line"
        assert any("histogram_quantile(0.95" in e for e in expressions([panel])), f"{latency} has no p95"
    attainment = panel_using("tandem_router_slo_requests_total", 'result="met"')
    assert any("$slo_percentile" in e for e in expressions([attainment])), "attainment without its target"
    panel_using("tandem_router_arrivals_total")
    panel_using("tandem_router_tokens_total", "direction")
    panel_using("tandem_router_handoff_wait_seconds_bucket", "histogram_quantile")
    panel_using("tandem_router_queue_depth")
    panel_using("tandem_router_endpoint_healthy", "role")
    panel_using("kube_deployment_status_replicas_ready", "prefill|decode")


def test_no_panel_needs_the_per_endpoint_label() -> None:
    """Routers label their endpoint series with engine URLs only in debug mode (router/metrics.py):
    by default the series are per pool and role, and the dashboard must work on them."""
    needing = [
        e for e in expressions(panels()) if re.search(r"\bendpoint\s*(=|!=|=~|!~)|by \([^)]*\bendpoint\b", e)
    ]
    assert needing == []


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
