"""An idle pool costs no API writes: nothing the operator owns changes over several resyncs.

Measured on the objects themselves (the resourceVersion of the pool and every child, and the
pool's Events), and on the operator's own count of writes. A ready pool has no timer of its own (no
autoscaling, nothing awaited): the resync is what looks at it while idle, so the resync period is
shortened and the idle span holds six of them, as a minute held four at 15 s.
"""

from __future__ import annotations

import time
from typing import Any

import kubernetes.client
import pytest
from operator_cluster import OperatorThread, PoolApi, example

from tandem.devcluster.testing import ClusterUnderTest, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


RESYNC_SECONDS = 2
IDLE_SECONDS = 6 * RESYNC_SECONDS  # six resyncs fall inside the idle span


def settled_versions(pools: PoolApi) -> dict[tuple[str, str], str] | None:
    """The resourceVersions of the pool and its children once a resync passes without changing
    them: the last status and Deployment updates have landed. None while they still change."""
    before = pools.resource_versions("sim-llama")
    time.sleep(RESYNC_SECONDS)
    after = pools.resource_versions("sim-llama")
    return after if after == before else None


def test_ready_pool_makes_no_writes_over_several_resyncs(
    devcluster: ClusterUnderTest,
    kube_api: kubernetes.client.ApiClient,
    namespace: str,
    inferencepool_crd: Any,
) -> None:
    pools = PoolApi(kube_api, namespace)
    operator = OperatorThread(devcluster.kubeconfig, namespace, resync_seconds=RESYNC_SECONDS).start()
    try:
        pools.create(example("simulator-pool.yaml"))
        wait_for(lambda: pools.ready("sim-llama"), timeout=180, message="pool Ready=True")
        versions = wait_for(lambda: settled_versions(pools), timeout=60, message="pool and children settled")
        events = len(pools.events("sim-llama"))
        writes = operator.metric("tandem_operator_api_writes_total")
        reconciles = operator.metric("tandem_operator_reconciles_total")
        time.sleep(IDLE_SECONDS)
        assert pools.resource_versions("sim-llama") == versions
        assert len(pools.events("sim-llama")) == events
        assert operator.metric("tandem_operator_api_writes_total") == writes
        # The resyncs did run (six are due; a loaded machine may run fewer).
        assert operator.metric("tandem_operator_reconciles_total") >= reconciles + 3
    finally:
        operator.stop()
