"""Router settings, parsed once at the edge (command line and environment) into frozen models."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tandem.api.spec import AdmissionPolicy, BalancePolicy, DisaggregationMode, KvConnector, LmcacheOptions
from tandem.router.decision import RoutingPolicy
from tandem.router.pool import PoolConfig

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
    balance: BalancePolicy = BalancePolicy.LEAST_LOAD
    admission: AdmissionPolicy = AdmissionPolicy.FIFO
    max_queue: int = Field(default=1024, ge=0)
    ttft_ms: float = Field(default=2000.0, gt=0)
    peer_init_port: int = Field(default=7300, ge=1, le=65535)
    peer_alloc_port: int = Field(default=7400, ge=1, le=65535)
    chunk_size: int = Field(default=256, ge=16)
    decoder_buffer_chunks: int | None = Field(default=None, ge=1)

    def pool_config(self, prefill_saturation: float) -> PoolConfig:
        tracked = self.connector == KvConnector.LMCACHE and self.decoder_buffer_chunks is not None
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
            connector=self.connector,
            lmcache=LmcacheOptions(
                peer_init_port=self.peer_init_port,
                peer_alloc_port=self.peer_alloc_port,
                chunk_size=self.chunk_size,
            ),
            decode_tp=self.decode_tp,
            admission=self.admission,
            max_queue=self.max_queue,
            ttft_ms=self.ttft_ms,
            decoder_buffer_chunks=self.decoder_buffer_chunks,
        )


class KubernetesSettings(_Frozen):
    namespace: str = Field(min_length=1)
    pools: tuple[str, ...] = Field(min_length=1)
    kubeconfig: Path | None = None  # None: in-cluster service account


class RouterSettings(_Frozen):
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    notify_port: int = Field(default=7500, ge=1, le=65535, description="LMCache notification PULL socket.")
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
    probe_interval_s: float = Field(default=1.0, gt=0, description="Health probes of endpoints taken out.")
    connect_timeout_s: float = Field(default=3.0, gt=0)
    control_timeout_s: float = Field(default=5.0, gt=0, description="/tokenize, /metrics, /health calls.")
    handoff_timeout_s: float = Field(default=30.0, gt=0, description="Wait for all KV notifications.")
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

    @model_validator(mode="after")
    def _one_source(self) -> RouterSettings:
        if (self.kubernetes is None) == (self.static is None):
            raise ValueError(
                "give either Kubernetes pools (--pool) or static engines (--static-decode), not both"
            )
        return self

    def listen_host(self) -> str:
        """The address to bind: a wildcard means TANDEM_BIND_HOST when that is set."""
        return self.bind_host if self.host in WILDCARDS and self.bind_host else self.host

    def replica_id(self) -> str:
        """`<ip>:<notify-port>`: where this replica's notifications go; a prefix of its req_ids."""
        host = self.pod_ip or self.listen_host()
        if host in WILDCARDS:
            host = "127.0.0.1"
        try:
            if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
                host = f"[{host}]"
        except ValueError:  # a host name
            pass
        return f"{host}:{self.notify_port}"
