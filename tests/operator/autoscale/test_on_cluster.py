"""The autoscaler on the devcluster: a simulator pool in mode Planner, driven by ``tandem load``.

The pool is planned for 0.5 requests/s of long prompts on A100s (one prefill replica sustains
about 0.6/s of them); the load sends several times that. The prefill replicas rise within the
stabilization window, status and a ``Scaled`` Event say why; once the load stops they return to
``minReplicas`` after the scale-down window; and an idle pool at its minimum costs at most a few API
writes a minute. The windows are shortened through the spec, as a test pool may.
The operator is held to its own RBAC, so it reads EndpointSlices and HPAs as when deployed.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import kubernetes.client
import pytest
from operator_cluster import OperatorThread, PoolApi, example

from tandem.devcluster.testing import ready_endpoints, wait_for

pytestmark = pytest.mark.cluster

SIM = "sim-llama"
LOAD_RPS = 2.4  # four times what one prefill replica sustains
# The rise comes a window and a scale-up window into the load (about 12 s): the load outlasts it.
LOAD_SECONDS = 20
AUTOSCALING = {
    "mode": "Planner",
    "interval": "2s",
    "window": "8s",
    "scaleUpStabilization": "4s",
    # Past the window: the last decision that needed more prefill (some 6 s after the load, the
    # window's rate then below one replica's) is this long past when the pool scales down, so the
    # window is empty by then and the decision says why: no traffic.
    "scaleDownStabilization": "10s",
    # One prefill replica at least: the pool hands every long prompt off (disaggregation Always),
    # and an idle spell before the load must not leave it without prefillers.
    "minReplicas": {"prefill": 1, "decode": 1},
    "maxReplicas": {"prefill": 4, "decode": 2},
}


def autoscaling(pools: PoolApi) -> dict[str, Any]:
    scaling: dict[str, Any] = (pools.get(SIM).get("status") or {}).get("autoscaling") or {}
    return scaling


def desired(pools: PoolApi) -> tuple[int, int] | None:
    counts = autoscaling(pools).get("desired")
    return (counts["prefill"], counts["decode"]) if counts else None


def until(pools: PoolApi, predicate: Callable[[], object], timeout: float, what: str) -> None:
    """``wait_for``, failing with what the autoscaler last said."""
    try:
        wait_for(predicate, timeout=timeout, message=what)
    except pytest.fail.Exception as exc:
        raise AssertionError(f"{exc}; status.autoscaling: {autoscaling(pools)}") from None


def test_load_scales_the_pool_up_and_its_end_down_with_status_events_and_few_writes(
    pools: PoolApi, rbac_operator: OperatorThread, kube_api: kubernetes.client.ApiClient
) -> None:
    pools.create(
        example(
            "simulator-pool.yaml",
            model={"name": "meta-llama/Llama-3.1-8B-Instruct", "maxModelLen": 16384},
            accelerator={"type": "A100-80GB"},
            slo={"ttftMs": 1500, "itlMs": 60},
            workload={
                "requestsPerSecond": 0.5,
                "promptTokens": {"mean": 4000, "p90": 8000},
                "outputTokens": {"mean": 32},
            },
            autoscaling=AUTOSCALING,
        )
    )
    wait_for(lambda: pools.ready(SIM), timeout=180, message="pool Ready=True")
    assert desired(pools) == (1, 1)
    condition = pools.condition(SIM, "Autoscaling")
    assert condition is not None and (condition["status"], condition["reason"]) == ("True", "Planner")

    (router_ip, port), *_ = wait_for(
        lambda: ready_endpoints(kube_api, pools.namespace, f"{SIM}-router"), message="router endpoints"
    )
    with urllib.request.urlopen(f"http://{router_ip}:{port}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    assert "tandem_router_arrivals" in exposition, (
        "the router exports none of the autoscaler's workload metrics (operator/autoscale/router_metrics.py)"
    )
    load = subprocess.Popen(
        [
            sys.executable, "-m", "tandem.cli", "load", f"http://{router_ip}:{port}",
            "--rate", str(LOAD_RPS), "--duration", f"{LOAD_SECONDS}s", "--timeout", "60",
            "--prompt-tokens", "mean=4000,p90=8000", "--output-tokens", "32", "--no-progress", "--seed", "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    started = time.monotonic()
    try:
        # Up: a window of traffic, then the scale-up window; a loaded machine gets some slack.
        until(pools, lambda: (desired(pools) or (0, 0))[0] > 1, 40, "prefill scaled up")
        rose_after = time.monotonic() - started
        scaling = autoscaling(pools)
        assert scaling["lastDecision"].startswith("scaled up prefill 1->"), scaling["lastDecision"]
        assert scaling["lastScaleTime"]
        observed = scaling["observed"]
        assert LOAD_RPS / 2 <= observed["requestsPerSecond"] <= LOAD_RPS * 2, observed
        assert observed["promptTokensP90"] > observed["promptTokensMean"] > 1000
        # The Event follows the status write that it is about.
        scaled = wait_for(
            lambda: [e.message for e in pools.events(SIM) if e.reason == "Scaled"], message="Scaled Event"
        )
        assert any("requests/s, the load needs prefill" in message for message in scaled), scaled
        counts = desired(pools)
        assert counts is not None
        assert pools.children(SIM)["Deployment", f"{SIM}-prefill"]["spec"]["replicas"] == counts[0]
        output, _ = load.communicate(timeout=LOAD_SECONDS + 90)
        assert load.returncode == 0, output
    finally:
        if load.poll() is None:
            load.kill()
        load.communicate()

    # Down: the traffic leaves the window, then the scale-down window passes: minReplicas.
    until(pools, lambda: desired(pools) == (1, 1), 60, "back to minReplicas")
    assert "no traffic" in autoscaling(pools)["lastDecision"]
    wait_for(lambda: pools.ready(SIM), timeout=60, message="Ready at minReplicas")

    # Idle at its minimum: a few writes a minute at most (none expected), over five intervals, once
    # the scale-down's own writes are done (the replicas and the status that reports them: two in a
    # row were seen landing in the measured span right after Ready).
    writes: list[float] = []

    def writes_hold_still() -> bool:  # polled every 4 s: two intervals between its readings
        writes.append(rbac_operator.metric("tandem_operator_api_writes_total"))
        return len(writes) > 1 and writes[-1] == writes[-2]

    wait_for(writes_hold_still, timeout=60, interval=4.0, message="no write over two intervals")
    before = rbac_operator.metric("tandem_operator_api_writes_total")
    time.sleep(10)  # a measured span, not a wait for something: the writes over it are the result
    assert rbac_operator.metric("tandem_operator_api_writes_total") - before <= 1
    assert rose_after < 40
    assert rbac_operator.metric("tandem_operator_reconcile_errors_total") == 0
    warnings = [(e.reason, e.message) for e in pools.events(SIM) if e.type == "Warning"]
    assert warnings == []
