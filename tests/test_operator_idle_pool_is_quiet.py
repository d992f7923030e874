"""An idle pool costs no API writes: nothing the operator owns changes over 60 s, resyncs included.

Measured on the objects themselves (the resourceVersion of the pool and every child, and the
pool's Events), and on the operator's own count of writes.
"""

from __future__ import annotations

import time
from typing import Any

import kubernetes.client
import pytest
from operator_cluster import OperatorThread, PoolApi, example

from tandem.devcluster.testing import ClusterUnderTest, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


IDLE_SECONDS = 60
RESYNC_SECONDS = 15  # several resyncs fall inside the idle window


def test_ready_pool_makes_no_writes_for_a_minute(
    devcluster: ClusterUnderTest,
    kube_api: kubernetes.client.ApiClient,
    namespace: str,
    inferencepool_crd: Any,
) -> None:
    pools = PoolApi(kube_api, namespace)
    operator = OperatorThread(devcluster.kubeconfig, namespace, resync_seconds=RESYNC_SECONDS).start()
    try:
        pools.create(example("simulator-pool.yaml"))

        def settled() -> bool:
            condition = pools.condition("sim-llama", "Ready")
            return condition is not None and condition["status"] == "True"

        wait_for(settled, timeout=180, message="pool Ready=True")
        time.sleep(5)  # let the last status and Deployment updates land
        versions = pools.resource_versions("sim-llama")
        events = len(pools.events("sim-llama"))
        writes = operator.metric("tandem_operator_api_writes_total")
        reconciles = operator.metric("tandem_operator_reconciles_total")
        time.sleep(IDLE_SECONDS)
        assert pools.resource_versions("sim-llama") == versions
        assert len(pools.events("sim-llama")) == events
        assert operator.metric("tandem_operator_api_writes_total") == writes
        assert operator.metric("tandem_operator_reconciles_total") > reconciles  # the resyncs did run
    finally:
        operator.stop()
