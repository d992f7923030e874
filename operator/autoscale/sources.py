"""Where the autoscaler reads a pool's traffic (``spec.autoscaling.metrics.source``): the router
pods themselves, or a Prometheus that scrapes them. I/O; the arithmetic is in ``window`` (Router)
and in PromQL (Prometheus), and both give the same ``Observation``.

Router: every interval the operator lists the EndpointSlices of the pool's router Service, GETs
``/metrics`` from each ready router pod (its ``http`` port, by pod IP), and keeps the scrapes of
the last window. Prometheus: every interval it runs the equivalent PromQL (``sum(rate(...[window]))``,
``histogram_quantile(q, sum by (le) (rate(..._bucket[window])))``) against ``/api/v1/query``.

Either raises ``MetricsUnavailableError`` (its message says why) when it has nothing to read.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx

from tandem.api import InferencePoolSpec, MetricsSource
from tandem.operator.autoscale.observation import STATUS_PERCENTILE, Lengths, Observation
from tandem.operator.autoscale.router_metrics import (
    ARRIVALS,
    ITL_SECONDS,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    SLO_MET,
    SLO_REQUESTS,
    TTFT_SECONDS,
    MetricsTextError,
    RouterSample,
    parse_router_metrics,
)
from tandem.operator.autoscale.window import Scrape, in_window, window_observation
from tandem.operator.kinds import Kind
from tandem.operator.kube import Body, KubeApi, KubeError
from tandem.operator.naming import PoolRef

SCRAPE_TIMEOUT_SECONDS = 5.0
ENDPOINT_SLICE_VERSIONS = ("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1")  # v1beta1: before 1.21
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ROUTER_PORT = "http"  # the router Service's port name: the API and /metrics


class MetricsUnavailableError(Exception):
    """Nothing to read this interval; the message says why."""


class Source(Protocol):
    async def observe(
        self, pool: PoolRef, spec: InferencePoolSpec, scrapes: list[Scrape], now: float
    ) -> Observation | None:
        """The window's observation (None: not a whole interval of data yet); ``scrapes``: the
        pool's history, which a scraping source keeps up to date."""
        ...


async def preferred_kind(api: KubeApi, versions: Sequence[str], kind: str, plural: str) -> Kind | None:
    """The first of ``versions`` (``group/version``) the API server serves, as a Kind."""
    group = versions[0].rpartition("/")[0]
    served = set(await api.served_versions(group))
    version = next((v for v in versions if v in served), None)
    return Kind(version, kind, plural) if version else None


def router_targets(slices: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Pod name (or address) -> ``/metrics`` URL of every ready, non-terminating router endpoint."""
    targets: dict[str, str] = {}
    for endpoint_slice in slices:
        ports = [p for p in endpoint_slice.get("ports") or [] if p.get("name") == ROUTER_PORT]
        if not ports or not isinstance(ports[0].get("port"), int):
            continue
        port = ports[0]["port"]
        for endpoint in endpoint_slice.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            for address in endpoint.get("addresses") or []:
                host = f"[{address}]" if ":" in address else address
                pod = (endpoint.get("targetRef") or {}).get("name") or address
                targets[pod] = f"http://{host}:{port}/metrics"
    return targets


class RouterSource:
    def __init__(self, api: KubeApi, http: httpx.AsyncClient) -> None:
        self._api = api
        self._http = http
        self._slices: Kind | None = None

    async def _endpoint_slices(self, pool: PoolRef) -> list[Body]:
        if self._slices is None:
            self._slices = await preferred_kind(
                self._api, ENDPOINT_SLICE_VERSIONS, "EndpointSlice", "endpointslices"
            )
            if self._slices is None:
                raise MetricsUnavailableError("the API server serves no EndpointSlices (discovery.k8s.io)")
        selector = f"{SERVICE_NAME_LABEL}={pool.router}"
        return await self._api.list_objects(self._slices, (pool.namespace,), selector)

    async def _read(self, pool: PoolRef, url: str) -> RouterSample:
        response = await self._http.get(url, timeout=SCRAPE_TIMEOUT_SECONDS)
        response.raise_for_status()
        return parse_router_metrics(response.text, pool.name)

    async def scrape(self, pool: PoolRef, at: float) -> Scrape:
        try:
            slices = await self._endpoint_slices(pool)
        except KubeError as exc:
            self._slices = None  # rediscovered next time
            raise MetricsUnavailableError(
                f"could not list the EndpointSlices of Service {pool.router}: {exc}"
            ) from exc
        targets = router_targets(slices)
        if not targets:
            raise MetricsUnavailableError(f"Service {pool.router} has no ready router pod to scrape")
        results = await asyncio.gather(
            *(self._read(pool, url) for url in targets.values()), return_exceptions=True
        )
        routers, missing = {}, {}
        for pod, result in zip(targets, results, strict=True):
            if isinstance(result, RouterSample):
                routers[pod] = result
            elif isinstance(result, httpx.HTTPError | MetricsTextError | UnicodeDecodeError):
                missing[pod] = str(result) or type(result).__name__
            else:
                raise result
        if not routers:
            raise MetricsUnavailableError(
                "no router answered on /metrics: "
                + "; ".join(f"{pod}: {why}" for pod, why in missing.items())
            )
        return Scrape(at=at, routers=routers, missing=missing)

    async def observe(
        self, pool: PoolRef, spec: InferencePoolSpec, scrapes: list[Scrape], now: float
    ) -> Observation | None:
        window = spec.autoscaling.window_seconds
        scrapes.append(await self.scrape(pool, now))
        scrapes[:] = in_window(scrapes, window)
        return window_observation(scrapes, window, spec.slo.percentile)


def _selector(pool: PoolRef, extra: str, **more: str) -> str:
    matchers = [f'pool="{pool.name}"', *(f'{k}="{v}"' for k, v in more.items())]
    if extra.strip():
        matchers.append(extra.strip().strip(","))
    return "{" + ",".join(matchers) + "}"


def promql(pool: PoolRef, spec: InferencePoolSpec) -> dict[str, str]:
    """The queries of one observation, by name; each answers one number (or nothing)."""
    source = spec.autoscaling.metrics.prometheus
    extra = (source.selector if source else None) or ""
    range_ = f"[{math.ceil(spec.autoscaling.window_seconds)}s]"
    series = _selector(pool, extra)

    def rate(name: str, selector: str = series) -> str:
        return f"sum(rate({name}{selector}{range_}))"

    def quantile(family: str, q: float) -> str:
        return f"histogram_quantile({q:g}, sum by (le) (rate({family}_bucket{series}{range_})))"

    def mean(family: str) -> str:
        return f"{rate(family + '_sum')} / {rate(family + '_count')}"

    p90, at_slo = STATUS_PERCENTILE / 100, spec.slo.percentile / 100
    return {
        "rps": rate(ARRIVALS),
        "prompt_mean": mean(PROMPT_TOKENS),
        "prompt_p90": quantile(PROMPT_TOKENS, p90),
        "output_mean": mean(OUTPUT_TOKENS),
        "output_p90": quantile(OUTPUT_TOKENS, p90),
        "ttft_p90": quantile(TTFT_SECONDS, p90),
        "itl_p90": quantile(ITL_SECONDS, p90),
        "ttft_slo": quantile(TTFT_SECONDS, at_slo),
        "itl_slo": quantile(ITL_SECONDS, at_slo),
        "judged": f"sum(increase({SLO_REQUESTS}{series}{range_}))",
        "met": f"sum(increase({SLO_REQUESTS}{_selector(pool, extra, result=SLO_MET)}{range_}))",
    }


def scalar(answer: object) -> float | None:
    """The one number of an instant-vector answer of ``/api/v1/query``; None for no series or NaN."""
    if not isinstance(answer, dict):
        raise MetricsUnavailableError(f"Prometheus answered {str(answer)[:200]!r}, not a query result")
    if answer.get("status") != "success":
        raise MetricsUnavailableError(f"Prometheus answered {answer.get('errorType')}: {answer.get('error')}")
    try:
        result = answer["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MetricsUnavailableError(f"Prometheus answered no instant vector: {str(answer)[:200]}") from exc
    return None if math.isnan(value) or math.isinf(value) else value


def observation_from(values: Mapping[str, float | None]) -> Observation:
    def lengths(mean: float | None, p90: float | None) -> Lengths | None:
        return Lengths(mean, p90) if mean is not None and p90 is not None else None

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else 1000 * seconds

    judged, met = values["judged"] or 0.0, values["met"] or 0.0
    return Observation(
        requests_per_second=values["rps"] or 0.0,
        prompt_tokens=lengths(values["prompt_mean"], values["prompt_p90"]),
        output_tokens=lengths(values["output_mean"], values["output_p90"]),
        ttft_p90_ms=ms(values["ttft_p90"]),
        itl_p90_ms=ms(values["itl_p90"]),
        ttft_ms=ms(values["ttft_slo"]),
        itl_ms=ms(values["itl_slo"]),
        slo_attainment=met / judged if judged > 0 else None,
        judged=judged,
    )


class PrometheusSource:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def _query(self, url: str, query: str) -> float | None:
        response = await self._http.get(
            f"{url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=SCRAPE_TIMEOUT_SECONDS
        )
        if response.status_code >= 500 or response.status_code in (401, 403, 404):
            response.raise_for_status()
        return scalar(response.json())

    async def observe(
        self, pool: PoolRef, spec: InferencePoolSpec, scrapes: list[Scrape], now: float
    ) -> Observation | None:
        source = spec.autoscaling.metrics.prometheus
        if source is None:
            raise MetricsUnavailableError("spec.autoscaling.metrics.prometheus: no url")
        queries = promql(pool, spec)
        try:
            answers = await asyncio.gather(*(self._query(source.url, q) for q in queries.values()))
        except (httpx.HTTPError, ValueError) as exc:
            raise MetricsUnavailableError(f"Prometheus at {source.url}: {exc}") from exc
        values = dict(zip(queries, answers, strict=True))
        if values["rps"] is None:
            raise MetricsUnavailableError(
                f"Prometheus at {source.url} has no {ARRIVALS} series for {queries['rps']}"
            )
        return observation_from(values)


def sources(api: KubeApi, http: httpx.AsyncClient) -> dict[MetricsSource, Source]:
    """The registry: one reader per ``spec.autoscaling.metrics.source``."""
    return {MetricsSource.ROUTER: RouterSource(api, http), MetricsSource.PROMETHEUS: PrometheusSource(http)}
