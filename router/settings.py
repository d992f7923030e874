"""Router settings, parsed once at the edge (command line and environment) into frozen models."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tandem.api.spec import (
    HANDOFF_TIMEOUT_SECONDS,
    AdmissionPolicy,
    AttentionKind,
    BalancePolicy,
    DisaggregationMode,
    KvConnector,
    LmcacheOptions,
    RouterTimeouts,
    SloSpec,
    connector_in_use,
)
from tandem.router.admission import ADMISSION, Need
from tandem.router.connectors.registry import CONNECTORS
from tandem.router.decision import RoutingPolicy
from tandem.router.outlier import EjectionPolicy
from tandem.router.pool import PoolConfig

log = logging.getLogger(__name__)

WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def _engine_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"engine URL must look like http://HOST:PORT, got {value!r}")
    return f"{parts.scheme}://{parts.netloc}"


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


EngineUrl = Annotated[str, AfterValidator(_engine_url)]
HostPort = Annotated[str, AfterValidator(_host_port)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StaticPoolSettings(_Frozen):
    """One pool whose engines are given by URL (outside Kubernetes, benchmarks)."""

    name: str = "static"
    model: str = Field(min_length=1)
    prefill: tuple[EngineUrl, ...] = ()
    decode: tuple[EngineUrl, ...] = Field(min_length=1)
    connector: KvConnector = KvConnector.LMCACHE
    mode: DisaggregationMode = DisaggregationMode.AUTO
    threshold: int = Field(default=1024, ge=0)
    decode_tp: int = Field(default=1, ge=1)
    prefill_dp: int = Field(default=1, ge=1, description="DP ranks behind each prefill URL.")
    decode_dp: int = Field(default=1, ge=1, description="DP ranks behind each decode URL.")
    attention: AttentionKind = Field(
        default=AttentionKind.GQA, description="The model's attention: MLA sends one notification."
    )
    balance: BalancePolicy = BalancePolicy.LEAST_LOAD
    admission: AdmissionPolicy = AdmissionPolicy.FIFO
    max_queue: int = Field(default=1024, ge=0)
    ttft_ms: float = Field(default=2000.0, gt=0)
    itl_ms: float = Field(default=50.0, gt=0)
    peer_init_port: int = Field(default=7300, ge=1, le=65535)
    peer_alloc_port: int = Field(default=7400, ge=1, le=65535)
    chunk_size: int = Field(default=256, ge=16)
    decoder_buffer_chunks: int | None = Field(default=None, ge=1)
    trust_client_priority: bool = False
    timeouts: RouterTimeouts = RouterTimeouts()

    @model_validator(mode="after")
    def _connector_fits_mode(self) -> StaticPoolSettings:
        connector_in_use(self.mode, self.connector)
        return self

    @property
    def in_use(self) -> KvConnector:
        """The connector the pool runs (`connector_in_use`)."""
        return connector_in_use(self.mode, self.connector)

    def pool_config(self, prefill_saturation: float) -> PoolConfig:
        if Need.GPU_TIME in ADMISSION[self.admission].needs:
            log.warning(
                "static pool %s: %s admission predicts GPU time with EngineTiming's defaults "
                "(tandem.api.timing; the simulator's too): there is no plan to read the engines' timing from",
                self.name,
                self.admission.value,
            )
        connector = self.in_use
        kind = CONNECTORS[connector]
        tracked = kind.pd_buffer and self.decoder_buffer_chunks is not None
        return PoolConfig(
            name=self.name,
            model=self.model,
            routing=RoutingPolicy(
                mode=self.mode,
                threshold=self.threshold,
                balance=self.balance,
                prefill_saturation=prefill_saturation,
                pd_chunk_tokens=self.chunk_size if tracked else None,
            ),
            connector=connector,
            lmcache=LmcacheOptions(
                peer_init_port=self.peer_init_port,
                peer_alloc_port=self.peer_alloc_port,
                chunk_size=self.chunk_size,
            ),
            decode_tp=self.decode_tp,
            prefill_dp=self.prefill_dp,
            decode_dp=self.decode_dp,
            kv_notifications=kind.notifications(self.attention, self.decode_tp),
            admission=self.admission,
            max_queue=self.max_queue,
            slo=SloSpec(ttft_ms=self.ttft_ms, itl_ms=self.itl_ms),
            decoder_buffer_chunks=self.decoder_buffer_chunks if tracked else None,
            trust_client_priority=self.trust_client_priority,
            timeouts=self.timeouts,
        )


class KubernetesSettings(_Frozen):
    namespace: str = Field(min_length=1)
    pools: tuple[str, ...] = Field(min_length=1)
    kubeconfig: Path | None = None  # None: in-cluster service account


class RouterSettings(_Frozen):
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    notify_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The KV-notification PULL socket, for pools whose connector notifies "
        "(notify_listen_port); Kubernetes mode: none without it.",
    )
    bind_host: str | None = Field(default=None, description="TANDEM_BIND_HOST: what a wildcard bind means.")
    pod_ip: str | None = Field(default=None, description="POD_IP: names this replica in handoff req_ids.")
    kubernetes: KubernetesSettings | None = None
    static: StaticPoolSettings | None = None
    notify_peers: tuple[HostPort, ...] = Field(
        default=(), description="Static mode: other replicas' notify addresses, which may own a req_id."
    )
    api_keys_file: Path | None = None
    max_body_bytes: int = Field(default=8 * 1024**2, ge=1024)
    scrape_interval_s: float = Field(default=2.0, ge=0, description="Engine /metrics scrapes; 0 turns off.")
    probe_interval_s: float = Field(
        default=1.0, gt=0, description="The first ejection's length; later ones in a row double it."
    )
    max_ejection_s: float = Field(default=300.0, gt=0, description="The longest ejection.")
    consecutive_failures: int = Field(
        default=5, ge=1, description="Failures in a row (5xx, timeouts) that eject an endpoint."
    )
    control_timeout_s: float = Field(default=5.0, gt=0, description="/tokenize, /metrics, /health calls.")
    handoff_timeout_s: float = Field(
        default=HANDOFF_TIMEOUT_SECONDS, gt=0, description="Wait for all KV notifications."
    )
    handoff_drain_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="A handoff its request left: wait this long for its KV before giving it up.",
    )
    retries: int = Field(
        default=2, ge=0, description="Other endpoints tried after a failure before the first byte."
    )
    max_inflight_per_decode: int = Field(
        default=256, ge=1, description="Admitted requests per decode endpoint."
    )
    retry_after_s: int = Field(default=1, ge=1)
    default_threshold: int = Field(
        default=1024, ge=0, description='For threshold "auto" before a plan exists.'
    )
    prefill_saturation: float = Field(
        default=16.0, gt=0, description="Load at which a prefiller is saturated."
    )
    stream_first_token: bool = False
    route_headers: bool = True
    session_header: str = "x-session-id"
    priority_header: str = "x-tandem-priority"
    deadline_header: str = "x-tandem-ttft-ms"
    drain_timeout_s: float = Field(default=30.0, ge=0)
    # The client-facing edge (docs/router.md, "The client edge").
    max_header_count: int = Field(default=100, ge=1, description="Headers a request may have; more: 431.")
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Bytes of request line and headers; more: 431 (414)."
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="A request's head, from its first byte or the connection: else 408."
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="A request's body, from the end of its head: else 408."
    )
    debug: bool = Field(
        default=False, description="Engine URLs in x-tandem-prefill/-decode headers, metric labels, spans."
    )
    otlp_traces_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces URL: a span per request (docs/tracing.md); None: off."
    )

    @model_validator(mode="after")
    def _one_source(self) -> RouterSettings:
        if (self.kubernetes is None) == (self.static is None):
            raise ValueError(
                "give either Kubernetes pools (--pool) or static engines (--static-decode), not both"
            )
        return self

    def ejection(self) -> EjectionPolicy:
        return EjectionPolicy(self.consecutive_failures, self.probe_interval_s, self.max_ejection_s)

    def listen_host(self) -> str:
        """The address to bind: a wildcard means TANDEM_BIND_HOST when that is set."""
        return self.bind_host if self.host in WILDCARDS and self.bind_host else self.host

    def notify_listen_port(self) -> int | None:
        """The port this replica takes KV notifications on; None: it opens none. In Kubernetes mode
        `notify_port`, which the operator gives exactly when a pool the router serves has a connector
        that notifies; in static mode the static pool's connector decides, on `notify_port` or
        LMCache's default proxy port."""
        if self.static is None:
            return self.notify_port
        if not CONNECTORS[self.static.in_use].notifies:
            return None
        return self.notify_port or LmcacheOptions().proxy_port

    def replica_id(self) -> str:
        """`<ip>:<notify-port>`: where this replica's notifications go; a prefix of its req_ids
        (port 0 where it opens none: nothing can be sent or forwarded to it)."""
        host = self.pod_ip or self.listen_host()
        if host in WILDCARDS:
            host = "127.0.0.1"
        try:
            if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
                host = f"[{host}]"
        except ValueError:  # a host name
            pass
        return f"{host}:{self.notify_listen_port() or 0}"
