"""A router's workload metrics as the contract names them (operator/autoscale/router_metrics.py),
exposed through prometheus_client, the library the router itself uses: what the autoscaler's
tests scrape, in place of a router process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

TOKEN_BUCKETS = tuple(float(2**k) for k in range(4, 17))  # 16 ... 65536 tokens
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ContractRouter:
    """One router replica's /metrics; ``restart()`` starts its counters from zero, as a new process."""

    def __init__(self, pool: str = "sim-llama", model: str = "meta-llama/Llama-3.1-8B-Instruct") -> None:
        self.pool, self.model = pool, model
        self.restart()

    def restart(self) -> None:
        self.registry = registry = CollectorRegistry()
        labels, routed = ["pool", "model"], ["pool", "model", "route"]
        self.arrivals = Counter("tandem_router_arrivals", "Requests that arrived.", labels, registry=registry)
        self.prompt = Histogram(
            "tandem_router_prompt_tokens", "Prompt tokens.", routed, buckets=TOKEN_BUCKETS, registry=registry
        )
        self.output = Histogram(
            "tandem_router_output_tokens", "Output tokens.", routed, buckets=TOKEN_BUCKETS, registry=registry
        )
        self.ttft = Histogram(
            "tandem_router_ttft_seconds", "TTFT.", routed, buckets=SECONDS_BUCKETS, registry=registry
        )
        self.itl = Histogram(
            "tandem_router_itl_seconds", "ITL.", routed, buckets=SECONDS_BUCKETS, registry=registry
        )
        self.slo = Counter(
            "tandem_router_slo_requests", "Requests by SLO result.", [*routed, "result"], registry=registry
        )
        self.tokens = Counter("tandem_router_tokens", "Tokens.", [*labels, "direction"], registry=registry)
        self.arrivals.labels(self.pool, self.model)  # the series exists from the start, at 0

    def serve(
        self,
        requests: int,
        *,
        prompt: int = 1000,
        output: int = 200,
        ttft_s: float = 0.3,
        itl_s: float = 0.02,
        route: str = "pd",
        result: str = "met",
        pool: str | None = None,
        itl_gaps: int | None = None,
    ) -> None:
        """``requests`` finished requests, each with these figures and one ITL sample per gap
        between its tokens (or ``itl_gaps`` of them, which keeps long runs quick)."""
        pool = pool or self.pool
        for _ in range(requests):
            self.arrivals.labels(pool, self.model).inc()
            self.prompt.labels(pool, self.model, route).observe(prompt)
            self.output.labels(pool, self.model, route).observe(output)
            self.ttft.labels(pool, self.model, route).observe(ttft_s)
            for _gap in range(max(0, output - 1) if itl_gaps is None else itl_gaps):
                self.itl.labels(pool, self.model, route).observe(itl_s)
            self.slo.labels(pool, self.model, route, result).inc()
            self.tokens.labels(pool, self.model, "in").inc(prompt)
            self.tokens.labels(pool, self.model, "out").inc(output)

    def text(self) -> str:
        return generate_latest(self.registry).decode()
