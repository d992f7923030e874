"""Discovery as pure functions: EndpointSlices, roles by exact Service name, and the pool's settings."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.api.spec import AdmissionPolicy, BalancePolicy, DisaggregationMode, KvConnector
from tandem.api.timing import EngineTiming
from tandem.router.decision import Role
from tandem.router.discovery.kubernetes import SliceTracker
from tandem.router.discovery.slices import choose_version, engine_endpoints, label_selector, notify_peers
from tandem.router.endpoints import EndpointAddress
from tandem.router.engine_http import Timeouts
from tandem.router.pool import pool_config_from_resource


def endpoint(
    ip: str, *, ready: bool | None = True, terminating: bool | None = None, pod: str = ""
) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    if ready is not None:
        conditions["ready"] = ready
    if terminating is not None:
        conditions["terminating"] = terminating
    return {
        "addresses": [ip],
        "conditions": conditions,
        "targetRef": {"kind": "Pod", "name": pod or f"pod-{ip}"},
    }


def slice_of(service: str, name: str, endpoints: list[dict[str, Any]], ports: Any = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}, "resourceVersion": "1"},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}] if ports is None else ports,
    }


@pytest.mark.parametrize(
    ("served", "chosen"),
    [(["v1", "v1beta1"], "v1"), (["v1beta1"], "v1beta1"), (["v1"], "v1")],
)
def test_slice_version_prefers_v1(served: list[str], chosen: str) -> None:
    assert choose_version(served) == chosen


def test_slice_version_without_a_known_one_is_an_error() -> None:
    with pytest.raises(LookupError):
        choose_version(["v2alpha1"])


def test_only_ready_non_terminating_endpoints_serve() -> None:
    obj = slice_of(
        "p-decode",
        "s1",
        [
            endpoint("10.0.0.1"),
            endpoint("10.0.0.2", ready=False),
            endpoint("10.0.0.3", ready=True, terminating=True),
            endpoint("10.0.0.4", ready=None),  # unknown readiness reads as ready
            {"addresses": [], "conditions": {"ready": True}},
        ],
    )
    assert [e.url for e in engine_endpoints([obj])] == ["http://10.0.0.1:8000", "http://10.0.0.4:8000"]
    assert engine_endpoints([obj])[0].name == "pod-10.0.0.1"


def test_endpoint_port_is_the_one_named_http() -> None:
    ports = [{"name": "metrics", "port": 9000}, {"name": "http", "port": 8080}]
    assert [e.url for e in engine_endpoints([slice_of("p-decode", "s", [endpoint("10.0.0.1")], ports)])] == [
        "http://10.0.0.1:8080"
    ]
    unnamed = slice_of("p-decode", "s", [endpoint("10.0.0.1")], [{"port": 8001}])
    assert [e.url for e in engine_endpoints([unnamed])] == ["http://10.0.0.1:8001"]
    ambiguous = slice_of(
        "p-decode", "s", [endpoint("10.0.0.1")], [{"name": "a", "port": 1}, {"name": "b", "port": 2}]
    )
    assert engine_endpoints([ambiguous]) == []


def test_ipv6_endpoint_urls_are_bracketed() -> None:
    obj = slice_of("p-decode", "s", [endpoint("fd00::5")])
    address = engine_endpoints([obj])[0]
    assert address.url == "http://[fd00::5]:8000"
    assert address.host == "fd00::5"


def test_router_peers_include_draining_replicas() -> None:
    ports = [{"name": "http", "port": 8000}, {"name": "kv-notify", "port": 7500}]
    obj = slice_of(
        "p-kv-notify", "r", [endpoint("10.0.9.1"), endpoint("10.0.9.2", ready=False, terminating=True)], ports
    )
    assert notify_peers([obj]) == {"10.0.9.1:7500", "10.0.9.2:7500"}


class RecordingSink:
    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, Role], list[str]] = {}
        self.peers: dict[str, set[str]] = {}

    def set_endpoints(self, pool: str, role: Role, addresses: Any) -> None:
        self.endpoints[(pool, role)] = sorted(a.url for a in addresses)

    def set_peers(self, pool: str, peers: Any) -> None:
        self.peers[pool] = set(peers)


def test_role_comes_from_the_exact_service_name() -> None:
    sink = RecordingSink()
    tracker = SliceTracker(("llama", "llama-decode"), sink)  # type: ignore[arg-type]
    tracker.replace(
        [
            slice_of("llama-decode", "a", [endpoint("10.0.0.1")]),
            slice_of("llama-decode-decode", "b", [endpoint("10.0.0.2")]),
            slice_of("llama-prefill", "c", [endpoint("10.0.0.3")]),
            slice_of("llama-decode-extra", "d", [endpoint("10.0.0.4")]),  # no pool has this Service
        ]
    )
    assert sink.endpoints[("llama", Role.DECODE)] == ["http://10.0.0.1:8000"]
    assert sink.endpoints[("llama-decode", Role.DECODE)] == ["http://10.0.0.2:8000"]
    assert sink.endpoints[("llama", Role.PREFILL)] == ["http://10.0.0.3:8000"]
    assert sink.endpoints[("llama-decode", Role.PREFILL)] == []


def test_a_service_spread_over_slices_is_their_union() -> None:
    sink = RecordingSink()
    tracker = SliceTracker(("p",), sink)  # type: ignore[arg-type]
    tracker.replace([slice_of("p-decode", "a", [endpoint("10.0.0.1")])])
    tracker.apply("ADDED", slice_of("p-decode", "b", [endpoint("10.0.0.2")]))
    assert sink.endpoints[("p", Role.DECODE)] == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    tracker.apply("MODIFIED", slice_of("p-decode", "a", [endpoint("10.0.0.1", ready=False)]))
    assert sink.endpoints[("p", Role.DECODE)] == ["http://10.0.0.2:8000"]
    tracker.apply("DELETED", slice_of("p-decode", "b", []))
    assert sink.endpoints[("p", Role.DECODE)] == []


def test_label_selector_names_exact_services() -> None:
    assert label_selector(["p-decode", "p-prefill"]) == "kubernetes.io/service-name in (p-decode,p-prefill)"


def test_endpoint_address_host_is_the_ip() -> None:
    assert EndpointAddress("http://10.1.2.3:8000").host == "10.1.2.3"


def pool_object(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "llama", "namespace": "ns"},
        "spec": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, "accelerator": {"type": "H100-80GB"}},
    }
    base["spec"].update(spec)
    return base


def test_pool_config_from_defaults() -> None:
    config = pool_config_from_resource(pool_object(), default_threshold=777, prefill_saturation=8)
    assert config.name == "llama"
    assert config.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert config.routing.threshold == 777  # "auto" and no plan yet
    assert config.routing.mode == DisaggregationMode.AUTO
    assert config.routing.prefill_saturation == 8
    assert config.connector == KvConnector.LMCACHE
    assert config.decode_tp == 1
    assert config.receiver_ports() == ([7300], [7400])
    assert config.kv_notifications == 1
    assert config.routing.pd_chunk_tokens == 256
    assert config.trust_client_priority is False


def test_pool_config_takes_plan_threshold_and_tp() -> None:
    obj = pool_object()
    obj["status"] = {
        "plan": {
            "feasible": True,
            "promptTokensThreshold": 2048,
            "decode": {
                "gpuType": "H100-80GB",
                "tensorParallel": 4,
                "pipelineParallel": 1,
                "replicas": 2,
                "gpus": 8,
            },
        }
    }
    config = pool_config_from_resource(obj, default_threshold=1, prefill_saturation=8)
    assert config.routing.threshold == 2048
    assert config.decode_tp == 4
    assert config.receiver_ports() == ([7300, 7301, 7302, 7303], [7400, 7401, 7402, 7403])


def _planned_buffer(obj: dict[str, Any], buffer_bytes: int | None) -> dict[str, Any]:
    decode = {"gpuType": "H100-80GB", "tensorParallel": 1, "pipelineParallel": 1, "replicas": 1, "gpus": 1}
    obj["status"] = {"plan": {"feasible": True, "decode": {**decode, "pdBufferBytes": buffer_bytes}}}
    return obj


def test_pool_config_admits_into_the_buffer_the_plan_published() -> None:
    """The operator renders the plan's pd_buffer_size (planner/pd_buffer.py); the router's admission
    counts the same chunks: 32 MiB a chunk of Llama-3.1-8B at TP1 (planner/kv_cache.py)."""
    planned = pool_config_from_resource(
        _planned_buffer(pool_object(), 3 * 1024**3), default_threshold=1, prefill_saturation=8
    )
    assert planned.decoder_buffer_chunks == 96
    unplanned = pool_config_from_resource(pool_object(), default_threshold=1, prefill_saturation=8)
    assert unplanned.decoder_buffer_chunks == 64  # LMCache's 2 GiB default until there is a plan


def test_pool_config_buffer_pin_wins_over_the_plan() -> None:
    obj = _planned_buffer(
        pool_object(disaggregation={"kvTransfer": {"lmcache": {"decoderBufferBytes": 1024**3}}}), 3 * 1024**3
    )
    config = pool_config_from_resource(obj, default_threshold=1, prefill_saturation=8)
    assert config.decoder_buffer_chunks == 32


def test_pool_config_pinned_values_win_over_the_plan() -> None:
    obj = pool_object(
        decode={"tensorParallel": 2},
        disaggregation={
            "mode": "Always",
            "promptTokensThreshold": 512,
            "kvTransfer": {"connector": "nixl", "lmcache": {"peerInitPort": 9000}},
        },
        router={
            "balancePolicy": "prefix",
            "admissionPolicy": "slo",
            "maxQueue": 7,
            "trustClientPriority": True,
        },
        slo={"ttftMs": 300},
    )
    obj["status"] = {"plan": {"feasible": True, "promptTokensThreshold": 2048}}
    config = pool_config_from_resource(obj, default_threshold=1, prefill_saturation=8)
    assert config.routing.threshold == 512
    assert config.routing.mode == DisaggregationMode.ALWAYS
    assert config.routing.balance == BalancePolicy.PREFIX
    assert config.connector == KvConnector.NIXL
    assert (config.admission, config.max_queue, config.slo.ttft_ms) == (AdmissionPolicy.SLO, 7, 300)
    assert config.trust_client_priority is True
    assert config.receiver_ports()[0] == [9000, 9001]


def test_pool_config_takes_the_pools_timeouts() -> None:
    obj = pool_object(router={"timeouts": {"firstByteSeconds": 30, "prefillSeconds": 10}})
    config = pool_config_from_resource(obj, default_threshold=1, prefill_saturation=8)
    assert config.engine_timeouts == Timeouts(connect_s=3, first_byte_s=30, idle_s=60)
    assert config.prefill_timeouts == Timeouts(connect_s=3, first_byte_s=10, idle_s=60)


def test_pool_config_sizes_the_decoder_buffer_from_the_architecture() -> None:
    arch = {
        "numLayers": 32,
        "hiddenSize": 4096,
        "numAttentionHeads": 32,
        "numKvHeads": 8,
        "intermediateSize": 14336,
        "vocabSize": 128256,
        "totalParamsB": 8,
    }
    obj = pool_object(model={"name": "m", "architecture": arch}, decode={"tensorParallel": 2})
    config = pool_config_from_resource(obj, default_threshold=1, prefill_saturation=8)
    per_token = 2 * 32 * 4 * 128 * 2  # K and V, layers, KV heads per rank, head dim, bf16
    assert config.decoder_buffer_chunks == 2 * 1024**3 // (per_token * 256)
    assert config.routing.pd_chunk_tokens == 256


@pytest.mark.parametrize(("mode", "connector"), [("Never", "lmcache"), ("Auto", "nixl"), ("Always", "nixl")])
def test_only_lmcache_pools_admit_handoffs_against_a_decoder_buffer(mode: str, connector: str) -> None:
    """An aggregated pool (mode Never) runs no connector whatever kvTransfer.connector says, and a
    NIXL decoder has no PD buffer: neither is admitted against one nor awaits notifications."""
    obj = pool_object(disaggregation={"mode": mode, "kvTransfer": {"connector": connector}})
    config = pool_config_from_resource(obj, default_threshold=1, prefill_saturation=8)
    assert config.connector == (KvConnector.NONE if mode == "Never" else KvConnector.NIXL)
    assert config.decoder_buffer_chunks is None and config.routing.pd_chunk_tokens is None
    assert config.kv_notifications == 0


def _role(replicas: int, **timing: float) -> dict[str, Any]:
    return {
        "gpuType": "H100-80GB",
        "tensorParallel": 1,
        "pipelineParallel": 1,
        "replicas": replicas,
        "gpus": replicas,
        "engineTiming": timing,
    }


@pytest.mark.parametrize(
    ("prefill_replicas", "prefill_ms_per_token"),
    [(2, 0.01), (0, 0.2)],  # aggregated (no prefiller runs): the decoder prefills
)
def test_pool_config_predicts_gpu_time_with_the_plans_engine_timing(
    prefill_replicas: int, prefill_ms_per_token: float
) -> None:
    obj = pool_object(router={"admissionPolicy": "cost-optimized"})
    obj["status"] = {
        "plan": {
            "feasible": True,
            "prefill": _role(prefill_replicas, prefill_ms_per_token=0.01),
            "decode": _role(1, prefill_ms_per_token=0.2, decode_ms_per_seq=3.0),
        }
    }
    config = pool_config_from_resource(obj, default_threshold=1, prefill_saturation=8)
    assert config.admission == AdmissionPolicy.COST_OPTIMIZED
    assert config.gpu_time.prefill.prefill_ms_per_token == prefill_ms_per_token
    assert config.gpu_time.decode.decode_ms_per_seq == 3.0


def test_pool_config_without_a_plan_predicts_with_the_default_timing() -> None:
    config = pool_config_from_resource(pool_object(), default_threshold=1, prefill_saturation=8)
    assert config.gpu_time.prefill == config.gpu_time.decode == EngineTiming()
