"""Prometheus metrics: vLLM's names (what routers read) and the simulator's own ``tandem_sim_*``.

Each app owns its registry. vLLM metrics carry the labels ``model_name`` and ``engine`` ("0");
times are wall-clock seconds as observed (so ``--speed 10`` shows ten times shorter times).

The simulator's KV-handoff counters (label ``connector``: ``lmcache`` or ``nixl``) say whether the
router paired prefill and decode right:

- ``tandem_sim_kv_hits_total``: a decode leg found its prompt's KV complete and skipped prefill;
- ``tandem_sim_kv_misses_total``: a decode leg (an LMCache continuation prompt, or a NIXL request
  with ``do_remote_prefill``) found no KV and recomputed the prompt;
- ``tandem_sim_kv_early_reads_total``: an LMCache decode leg found its KV still being written (the
  router did not wait for the notifications); the answer is garbage, as it would be;
- ``tandem_sim_kv_stale_reads_total``: a NIXL decode leg read blocks whose lease had ended (expired,
  read already); the answer is garbage, as it would be;
- ``tandem_sim_kv_lookups_total``: every lookup a decoder made (direct requests included);
- ``tandem_sim_kv_bytes_sent_total`` / ``tandem_sim_kv_bytes_received_total``: KV moved;
- ``tandem_sim_kv_alloc_failures_total``: LMCache allocations refused (PD buffer full), counted
  on both sides;
- ``tandem_sim_proxy_notifications_total{outcome="sent|dropped"}``: LMCache ``ProxyNotif``s;
- ``tandem_sim_pd_buffer_free_chunks`` / ``tandem_sim_pd_buffer_chunks``: the decoder's PD buffer
  (summed over worker ranks);
- ``tandem_sim_faults_injected_total{fault}``: requests a fault acted on.

Metrics of the real engines' KV connectors, under their names:

- ``vllm:external_prefix_cache_queries_total`` / ``vllm:external_prefix_cache_hits_total`` (vLLM
  0.33 ``v1/metrics/loggers.py`` 686-705), on an engine with a KV connector: prompt tokens past the
  local prefix-cache hit, and those the connector loaded (a decoder's handed-off KV, a prefiller's
  CPU-tier hit), counted at admission as ``v1/core/sched/scheduler.py`` 1211-1214 does;

- ``lmcache:active_memory_objs_count`` and ``lmcache:local_cache_usage`` (bytes), labels
  ``model_name``, ``worker_id``, ``role``, ``served_model_name``: the chunks allocated in a decoder
  rank's PD buffer, as LMCache's paged allocator reports them
  (``v1/memory_allocators/paged_tensor_memory_allocator.py`` 167-170, ``observability.py``
  1079-1106, 1905-1912);
- ``vllm:nixl_num_kv_expired_reqs_total`` and ``vllm:nixl_num_notifications_after_expiry_total``
  (labels ``model_name``, ``engine``) on a NIXL prefiller: leases that ran out, and reads of blocks
  whose lease had ended (vLLM 0.33 ``nixl/stats.py`` 265-285).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)  # fmt: skip
_REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                    240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
_VLLM_LABELS = ("model_name", "engine")
CONNECTORS = ("lmcache", "nixl")


@dataclass(frozen=True)
class EngineGauges:
    """One engine's (DP rank's) load gauges."""

    num_requests_running: Gauge
    num_requests_waiting: Gauge
    kv_cache_usage_perc: Gauge


class SimMetrics:
    """The metric objects of one simulator; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, model_name: str, model: str | None = None) -> None:
        model = model or model_name
        self.registry = CollectorRegistry()
        labels = {"model_name": model_name, "engine": "0"}
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, _VLLM_LABELS, registry=r).labels(**labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, _VLLM_LABELS, registry=r).labels(**labels)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, _VLLM_LABELS, buckets=buckets, registry=r).labels(**labels)

        # One series per DP rank (engine label), as vLLM's API server over several engines reports.
        self._engine_gauges = (
            Gauge("vllm:num_requests_running", "Requests in the running batch.", _VLLM_LABELS, registry=r),
            Gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.", _VLLM_LABELS, registry=r),
            Gauge(
                "vllm:kv_cache_usage_perc", "KV-cache usage, 1 means 100 percent.", _VLLM_LABELS, registry=r
            ),
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Generation tokens processed.")
        self.prefix_cache_queries = counter("vllm:prefix_cache_queries", "Prefix-cache queries, in tokens.")
        self.prefix_cache_hits = counter("vllm:prefix_cache_hits", "Prefix-cache hits, in tokens.")
        self.external_prefix_cache_queries = counter(
            "vllm:external_prefix_cache_queries", "KV connector prefix-cache queries, in tokens."
        )
        self.external_prefix_cache_hits = counter(
            "vllm:external_prefix_cache_hits", "KV connector prefix-cache hits, in tokens."
        )
        self.num_preemptions = counter("vllm:num_preemptions", "Cumulative preemptions.")
        self._request_success = Counter(
            "vllm:request_success", "Finished requests.", (*_VLLM_LABELS, "finished_reason"), registry=r
        )
        self._labels = labels
        self.time_to_first_token = histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", _TTFT_BUCKETS
        )
        self.inter_token_latency = histogram(
            "vllm:inter_token_latency_seconds", "Inter-token latency.", _ITL_BUCKETS
        )
        self.e2e_request_latency = histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", _REQUEST_BUCKETS
        )
        self.request_queue_time = histogram(
            "vllm:request_queue_time_seconds", "Time spent waiting before first scheduled.", _REQUEST_BUCKETS
        )
        self.request_prefill_time = histogram(
            "vllm:request_prefill_time_seconds", "Time from first scheduled to first token.", _REQUEST_BUCKETS
        )

        self.kv_hits = Counter(
            "tandem_sim_kv_hits", "Decode legs whose KV was complete.", ["connector"], registry=r
        )
        self.kv_misses = Counter(
            "tandem_sim_kv_misses", "Decode legs that found no KV and recomputed.", ["connector"], registry=r
        )
        self.kv_early_reads = Counter(
            "tandem_sim_kv_early_reads",
            "Decode legs that read KV still being written.",
            ["connector"],
            registry=r,
        )
        self.kv_stale_reads = Counter(
            "tandem_sim_kv_stale_reads",
            "Decode legs that read KV blocks whose lease had ended.",
            ["connector"],
            registry=r,
        )
        self.kv_lookups = Counter(
            "tandem_sim_kv_lookups", "KV lookups by a decoder.", ["connector"], registry=r
        )
        self.kv_bytes_sent = Counter("tandem_sim_kv_bytes_sent", "KV bytes sent.", ["connector"], registry=r)
        self.kv_bytes_received = Counter(
            "tandem_sim_kv_bytes_received", "KV bytes received.", ["connector"], registry=r
        )
        for family in (
            self.kv_hits,
            self.kv_misses,
            self.kv_early_reads,
            self.kv_stale_reads,
            self.kv_lookups,
            self.kv_bytes_sent,
            self.kv_bytes_received,
        ):
            for connector in CONNECTORS:
                family.labels(connector=connector)
        self.kv_alloc_failures = Counter(
            "tandem_sim_kv_alloc_failures", "LMCache PD-buffer allocations refused.", registry=r
        )
        self.proxy_notifications = Counter(
            "tandem_sim_proxy_notifications", "LMCache ProxyNotif messages.", ["outcome"], registry=r
        )
        for outcome in ("sent", "dropped"):
            self.proxy_notifications.labels(outcome=outcome)
        self.pd_buffer_free_chunks = Gauge(
            "tandem_sim_pd_buffer_free_chunks", "Free chunks in the decoder's PD buffer.", registry=r
        )
        self.pd_buffer_chunks = Gauge(
            "tandem_sim_pd_buffer_chunks", "Chunks in the decoder's PD buffer.", registry=r
        )
        self.faults_injected = Counter(
            "tandem_sim_faults_injected", "Requests a fault acted on.", ["fault"], registry=r
        )
        self.nixl_kv_expired_reqs = counter(
            "vllm:nixl_num_kv_expired_reqs", "Number of requests that had their KV expire."
        )
        self.nixl_notifications_after_expiry = counter(
            "vllm:nixl_num_notifications_after_expiry",
            "Number of completion notifications for requests that were no longer tracked.",
        )
        lmcache_labels = ("model_name", "worker_id", "role", "served_model_name")
        self._lmcache_objs = Gauge(
            "lmcache:active_memory_objs_count",
            "The number of active memory objects",
            lmcache_labels,
            registry=r,
        )
        self._lmcache_usage = Gauge(
            "lmcache:local_cache_usage", "Local cache usage (bytes) of lmcache", lmcache_labels, registry=r
        )
        self._lmcache_labels = {"model_name": model, "role": "worker", "served_model_name": model_name}

    def lmcache_buffer(self, worker_id: int, chunks: int, used_bytes: int) -> None:
        """One decoder rank's PD buffer: chunks allocated, and their bytes."""
        labels = {**self._lmcache_labels, "worker_id": str(worker_id)}
        self._lmcache_objs.labels(**labels).set(chunks)
        self._lmcache_usage.labels(**labels).set(used_bytes)

    def engine(self, rank: int) -> EngineGauges:
        """The load gauges of DP rank `rank` (engine label `rank`; the counters and histograms are
        the API server's, labelled engine 0)."""
        labels = {**self._labels, "engine": str(rank)}
        running, waiting, kv = (family.labels(**labels) for family in self._engine_gauges)
        return EngineGauges(running, waiting, kv)

    def request_success(self, finished_reason: str) -> None:
        self._request_success.labels(**self._labels, finished_reason=finished_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
