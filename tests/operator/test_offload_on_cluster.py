"""LMCache's CPU tier end to end on a simulator pool: the operator renders the tier into the
prefillers' LMCache config, the simulated prefiller keeps its prompts' chunks there, and a prefix
that fell out of its GPU prefix cache is served from the tier (vllm:external_prefix_cache_hits).

Routed handoffs one after another take the same LMCache tag from the router's lease on the decoder
(router/connectors/tag_lease.py), so the second handoff of a repeated prompt finds the chunks the
first stored. LMCache 0.5.6 keys every tier by the request's tags (lmcache/utils.py:428-464), so a
prompt sent to the prefiller untagged does not; docs/operator.md ("Offload tiers") says more.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import yaml
from operator_cluster import OperatorThread, PoolApi, example
from prometheus_text import metric_sum

from tandem.devcluster.testing import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SIM = "sim-llama"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# vLLM's fraction at 0.24 leaves a simulated H100 prefiller about 16,000 tokens of GPU KV cache; the
# CPU tier's 4 GiB per GPU holds 32,768 tokens of Llama-3.1-8B (128 KiB each).
OFFLOAD = {"cpu": {"sizeGiB": 4}}
SHARED = "Policy:" + " ab" * 3000  # about 3,000 tokens, above the plan's handoff threshold


def filler(i: int) -> str:
    return f"Note {i}:" + " cd" * 3000


def post(base: str, prompt: str) -> dict[str, Any]:
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": 2}).encode()
    request = urllib.request.Request(
        f"{base}/v1/completions", body, {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def external_hits(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        return metric_sum(response.read().decode(), "vllm:external_prefix_cache_hits_total")


def pod_url(api: PoolApi, selector: str) -> str:
    pods = api.core.list_namespaced_pod(
        api.namespace, label_selector=f"tandem.dev/pool={SIM},{selector}"
    ).items
    (pod,) = [p for p in pods if p.status.pod_ip]
    return f"http://{pod.status.pod_ip}:8000"


def test_a_prefix_evicted_from_the_gpu_cache_is_served_to_routed_handoffs_from_the_cpu_tier(
    pools: PoolApi,
    operator: OperatorThread,
) -> None:
    body = example(
        "simulator-pool.yaml",
        engine={"type": "simulator", "gpuMemoryUtilization": 0.24},
        disaggregation={
            "mode": "Always",
            "kvTransfer": {"connector": "lmcache", "lmcache": {"offload": OFFLOAD}},
        },
    )
    pools.create(body)
    wait_for(lambda: pools.ready(SIM), timeout=180, message="pool Ready=True")
    config = pools.core.read_namespaced_config_map(f"{SIM}-prefill-lmcache", pools.namespace)
    rendered = yaml.safe_load(config.data["lmcache.yaml"])
    assert rendered["local_cpu"] is True and rendered["max_local_cpu_size"] == 4.0

    router = pod_url(pools, "app.kubernetes.io/component=router")
    prefiller = pod_url(pools, "tandem.dev/role=prefill")
    wait_for(lambda: post(router, "Say hello.") is not None, timeout=60, message="the router serving")

    # Through the router: the shared prompt's handoff stores its chunks under the decoder's first
    # tag, the fillers push them out of the GPU cache, and the next handoff under that tag loads them.
    for prompt in (SHARED, *(filler(i) for i in range(5))):
        post(router, prompt)
    assert external_hits(prefiller) == 0
    answer = post(router, SHARED)
    routed = external_hits(prefiller)
    assert routed >= 2900
    assert answer["usage"]["prompt_tokens"] > 2900

    # Straight to the prefiller, untagged: the tier holds the prefix only under the handoffs' tag.
    for prompt in (*(filler(i) for i in range(5, 10)), SHARED):
        post(prefiller, prompt)
    assert external_hits(prefiller) == routed
