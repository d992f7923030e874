"""Where the autoscaler reads traffic: the router pods (found by the router Service's
EndpointSlices) and Prometheus (its HTTP API's instant queries), both over httpx transports in
tests, and what each makes of failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from operator_memory_api import MemoryApi, pool_body
from router_signals import ContractRouter

from tandem.api import InferencePoolSpec
from tandem.operator.autoscale.sources import (
    MetricsUnavailableError,
    PrometheusSource,
    RouterSource,
    promql,
    router_targets,
)
from tandem.operator.autoscale.window import Scrape
from tandem.operator.naming import PoolRef

POOL = PoolRef(name="sim-llama", namespace="serving", uid="pool-uid")


def spec(**autoscaling: Any) -> InferencePoolSpec:
    return InferencePoolSpec.model_validate(pool_body(autoscaling={"mode": "Planner", **autoscaling})["spec"])


def endpoint(address: str, pod: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions, "targetRef": {"kind": "Pod", "name": pod}}


def test_router_targets_are_the_ready_endpoints_on_the_http_port() -> None:
    slices = [
        {
            "ports": [{"name": "http", "port": 8000}],
            "endpoints": [
                endpoint("10.0.0.1", "router-a", ready=True),
                endpoint("10.0.0.2", "router-b", ready=False),
                endpoint("10.0.0.3", "router-c", ready=True, terminating=True),
                endpoint("fd00::4", "router-d"),  # no conditions: ready is unknown, taken as ready
            ],
        },
        {"ports": [{"name": "kv-notify", "port": 7500}], "endpoints": [endpoint("10.0.0.5", "router-e")]},
    ]
    assert router_targets(slices) == {
        "router-a": "http://10.0.0.1:8000/metrics",
        "router-d": "http://[fd00::4]:8000/metrics",
    }


class Routers:
    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.api = MemoryApi()
        self.api.served["discovery.k8s.io"] = ["discovery.k8s.io/v1beta1"]  # a 1.20 API server
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        self.source = RouterSource(self.api, self.http)

    def slice(self, *endpoints: dict[str, Any], service: str = "sim-llama-router") -> None:
        self.api.objects["EndpointSlice", f"{service}-1"] = {
            "apiVersion": "discovery.k8s.io/v1beta1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-1",
                "namespace": "serving",
                "labels": {"kubernetes.io/service-name": service},
            },
            "ports": [{"name": "http", "port": 8000}],
            "endpoints": list(endpoints),
        }


async def test_every_router_is_scraped_and_one_that_fails_is_named() -> None:
    router = ContractRouter()
    router.serve(4)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "10.0.0.2":
            return httpx.Response(502, text="<html>bad gateway</html>")
        if request.url.host == "10.0.0.3":
            return httpx.Response(200, text="<html>not metrics</html>")
        if request.url.host == "10.0.0.4":
            return httpx.Response(
                200, content=b"\xff\xfe\x00", headers={"content-type": "text/plain; charset=utf-8"}
            )
        return httpx.Response(200, text=router.text())

    routers = Routers(handler)
    routers.slice(
        endpoint("10.0.0.1", "router-a", ready=True),
        endpoint("10.0.0.2", "router-b", ready=True),
        endpoint("10.0.0.3", "router-c", ready=True),
        endpoint("10.0.0.4", "router-d", ready=True),
    )
    scrape = await routers.source.scrape(POOL, at=5.0)
    assert scrape.at == 5.0 and scrape.routers["router-a"].arrivals == 4
    assert set(scrape.missing) == {"router-b", "router-c", "router-d"}
    assert "502" in scrape.missing["router-b"] and "not Prometheus text" in scrape.missing["router-c"]
    await routers.http.aclose()


async def test_a_shared_routers_pods_are_scraped_for_each_member_pool_its_own_series() -> None:
    """spec.router.shared: one router serves sim-llama and sim-qwen; each pool's figures are its
    own series on the shared router's pods, found by the shared router's Service."""
    router = ContractRouter()
    router.serve(4)
    router.serve(9, pool="sim-qwen")
    routers = Routers(lambda request: httpx.Response(200, text=router.text()))
    routers.slice(endpoint("10.0.0.1", "chat-a", ready=True), service="chat")
    for name, arrivals in (("sim-llama", 4), ("sim-qwen", 9)):
        scrape = await routers.source.scrape(PoolRef(name, "serving", f"uid-{name}", "chat"), at=1.0)
        assert scrape.routers["chat-a"].arrivals == arrivals
    await routers.http.aclose()


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ((), "Service sim-llama-router has no ready router pod to scrape"),
        ((endpoint("10.0.0.1", "router-a", ready=True),), "no router answered on /metrics: router-a"),
    ],
)
async def test_nothing_to_scrape_is_metrics_unavailable(
    endpoints: tuple[dict[str, Any], ...], message: str
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    routers = Routers(refuse)
    routers.slice(*endpoints)
    with pytest.raises(MetricsUnavailableError, match=message):
        await routers.source.scrape(POOL, at=0.0)
    await routers.http.aclose()


async def test_the_router_source_keeps_just_the_scrapes_its_window_needs() -> None:
    router = ContractRouter()
    routers = Routers(lambda request: httpx.Response(200, text=router.text()))
    routers.slice(endpoint("10.0.0.1", "router-a", ready=True))
    scrapes: list[Scrape] = []
    pool_spec = spec(interval="10s", window="30s")
    assert await routers.source.observe(POOL, pool_spec, scrapes, 0.0) is None  # one scrape: no window
    for t in range(10, 101, 10):
        router.serve(20)
        observed = await routers.source.observe(POOL, pool_spec, scrapes, float(t))
        assert observed is not None and observed.requests_per_second == pytest.approx(2.0)
    assert [s.at for s in scrapes] == [70.0, 80.0, 90.0, 100.0]
    await routers.http.aclose()


def test_the_promql_is_the_router_arithmetic_over_the_window() -> None:
    pool_spec = spec(
        window="2m",
        metrics={
            "source": "Prometheus",
            "prometheus": {"url": "http://p:9090", "selector": 'namespace="llm"'},
        },
    ).model_copy(update={"slo": spec().slo.model_copy(update={"percentile": 95})})
    queries = promql(POOL, pool_spec)
    series = '{pool="sim-llama",namespace="llm"}'
    assert queries["rps"] == f"sum(rate(tandem_router_arrivals_total{series}[120s]))"
    assert queries["prompt_mean"] == (
        f"sum(rate(tandem_router_prompt_tokens_sum{series}[120s])) / "
        f"sum(rate(tandem_router_prompt_tokens_count{series}[120s]))"
    )
    assert queries["ttft_p90"] == (
        f"histogram_quantile(0.9, sum by (le) (rate(tandem_router_ttft_seconds_bucket{series}[120s])))"
    )
    assert queries["itl_slo"].startswith("histogram_quantile(0.95, ")
    assert queries["met"] == (
        'sum(increase(tandem_router_slo_requests_total{pool="sim-llama",result="met",namespace="llm"}[120s]))'
    )


def vector(value: str | None) -> dict[str, Any]:
    result = [] if value is None else [{"metric": {}, "value": [1700000000.0, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


PROMETHEUS = {"source": "Prometheus", "prometheus": {"url": "http://prometheus.monitoring:9090/prom"}}


async def observe_from(answer: Callable[[str], httpx.Response]) -> Any:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/prom/api/v1/query"
        asked.append(request.url.params["query"])
        return answer(request.url.params["query"])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await PrometheusSource(http).observe(POOL, spec(metrics=PROMETHEUS), [], 0.0), asked


async def test_prometheus_answers_make_the_observation() -> None:
    def answer(query: str) -> httpx.Response:
        if query.startswith("sum(rate(tandem_router_arrivals_total"):
            return httpx.Response(200, json=vector("12.5"))
        if "tandem_router_ttft_seconds_bucket" in query:
            return httpx.Response(200, json=vector("0.8"))
        if "tandem_router_itl_seconds_bucket" in query:
            return httpx.Response(200, json=vector("NaN"))  # no ITL sample in the window
        if 'result="met"' in query:
            return httpx.Response(200, json=vector("90"))
        if "increase(tandem_router_slo_requests_total" in query:
            return httpx.Response(200, json=vector("100"))
        if "_tokens_sum" in query:
            return httpx.Response(200, json=vector("1500"))
        return httpx.Response(200, json=vector("2000"))

    observed, asked = await observe_from(answer)
    assert len(asked) == 11
    assert observed.requests_per_second == 12.5
    assert observed.ttft_p90_ms == pytest.approx(800) and observed.itl_p90_ms is None
    assert observed.slo_attainment == pytest.approx(0.9) and observed.judged == 100
    assert observed.prompt_tokens is not None and observed.prompt_tokens.p90 == 2000


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda q: httpx.Response(200, json=vector(None)), "has no tandem_router_arrivals_total series"),
        (lambda q: httpx.Response(503, text="unavailable"), "503"),
        (
            lambda q: httpx.Response(
                400, json={"status": "error", "errorType": "bad_data", "error": "parse error"}
            ),
            "bad_data: parse error",
        ),
        (lambda q: httpx.Response(200, text="<html>"), "Prometheus at"),
        (lambda q: httpx.Response(200, json=["not", "a", "result"]), "not a query result"),
        (lambda q: httpx.Response(200, json={"status": "success", "data": {}}), "no instant vector"),
    ],
)
async def test_prometheus_failures_are_metrics_unavailable(
    answer: Callable[[str], httpx.Response], message: str
) -> None:
    with pytest.raises(MetricsUnavailableError, match=message):
        await observe_from(answer)
