"""The object cache: one record per pool, events queue their pool, echoes of own writes do not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from operator_memory_api import MemoryApi, pool_body

from tandem.operator.kinds import CHILD_KINDS
from tandem.operator.object_cache import ObjectCache, PoolKey
from tandem.operator.workqueue import WorkQueue

Body = dict[str, Any]
KEY = ("serving", "sim-llama")


class Watched:
    """An object cache whose queue's workers only note the pools they were given."""

    def __init__(self) -> None:
        self.reconciled: list[PoolKey] = []
        self.queue: WorkQueue[PoolKey] = WorkQueue(self._note, workers=1)
        self.cache = ObjectCache(self.queue)

    async def _note(self, key: PoolKey) -> None:
        self.reconciled.append(key)

    async def queued(self) -> list[PoolKey]:
        """The pools queued since the last call."""
        await self.queue.join()
        queued, self.reconciled = self.reconciled, []
        return queued


@pytest.fixture
async def watched() -> AsyncIterator[Watched]:
    running = Watched()
    running.queue.start()
    yield running
    await running.queue.stop()


def child(name: str, version: str, *, uid: str = "uid-1", pool: str = "sim-llama") -> Body:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "serving",
            "uid": uid,
            "resourceVersion": version,
            "labels": {"tandem.dev/pool": pool, "app.kubernetes.io/managed-by": "tandem-operator"},
            "managedFields": [{"manager": "tandem-operator", "fieldsV1": {"f:spec": {}}}],
        },
    }


async def test_a_pool_and_its_children_share_one_record(watched: Watched) -> None:
    objects = watched.cache
    objects.observe_child(None, child("sim-llama-decode", "5"))
    assert await watched.queued() == []  # no pool seen yet: nothing to reconcile
    objects.observe_pool(None, pool_body())
    assert await watched.queued() == [KEY]
    record = objects.get(KEY)
    assert record is not None and record.pool is not None
    assert list(record.children) == [("Service", "sim-llama-decode")]
    assert "managedFields" not in record.children["Service", "sim-llama-decode"]["metadata"]
    assert objects.pools() == [KEY]


async def test_an_echo_of_what_is_recorded_queues_nothing_a_change_does(watched: Watched) -> None:
    objects = watched.cache
    objects.observe_pool(None, pool_body())
    await watched.queued()
    record = objects.get(KEY)
    assert record is not None
    record.wrote_child(child("sim-llama-decode", "6"))  # the operator's apply, as the server answered
    objects.observe_child("MODIFIED", child("sim-llama-decode", "6"))  # its watch event
    objects.observe_pool("MODIFIED", pool_body())  # the pool at the resourceVersion recorded
    assert await watched.queued() == []
    objects.observe_child("MODIFIED", child("sim-llama-decode", "7"))  # someone else's change
    assert await watched.queued() == [KEY]
    objects.observe_child("DELETED", child("sim-llama-decode", "7"))
    assert await watched.queued() == [KEY]


async def test_a_late_deletion_of_a_replaced_child_keeps_its_successor(watched: Watched) -> None:
    objects = watched.cache
    objects.observe_pool(None, pool_body())
    objects.observe_child(None, child("sim-llama-decode", "8", uid="uid-2"))
    objects.observe_child("DELETED", child("sim-llama-decode", "5", uid="uid-1"))
    record = objects.get(KEY)
    assert record is not None
    assert record.children["Service", "sim-llama-decode"]["metadata"]["uid"] == "uid-2"


async def test_a_deleted_pool_keeps_only_its_children_until_they_go(watched: Watched) -> None:
    objects = watched.cache
    objects.observe_pool(None, pool_body())
    objects.observe_child(None, child("sim-llama-decode", "5"))
    await watched.queued()
    objects.observe_pool("DELETED", pool_body())
    assert objects.pools() == [] and objects.statuses() == []
    objects.observe_child("DELETED", child("sim-llama-decode", "5"))  # the garbage collector's
    assert objects.get(KEY) is None
    assert await watched.queued() == []


async def test_a_status_write_answered_after_the_pool_was_deleted_does_not_bring_it_back(
    watched: Watched,
) -> None:
    """Before: the write's answer was recorded as the pool even when its DELETED event had come in
    meanwhile, so every resync reconciled a pool that no longer existed."""
    objects = watched.cache
    objects.observe_pool(None, pool_body())
    objects.observe_child(None, child("sim-llama-decode", "5"))
    record = objects.get(KEY)
    assert record is not None
    objects.observe_pool("DELETED", pool_body())
    record.wrote_pool({**pool_body(), "status": {"observedGeneration": 1}})
    assert objects.pools() == []


async def test_objects_of_other_pools_or_unlabelled_ones_stay_apart(watched: Watched) -> None:
    objects = watched.cache
    objects.observe_child(None, child("other-decode", "5", pool="other"))
    unlabelled = child("stray", "5")
    del unlabelled["metadata"]["labels"]["tandem.dev/pool"]
    objects.observe_child(None, unlabelled)
    assert objects.get(KEY) is None
    other = objects.get(("serving", "other"))
    assert other is not None and list(other.children) == [("Service", "other-decode")]


async def test_prime_records_the_operators_children_from_a_list_of_each_kind(watched: Watched) -> None:
    api = MemoryApi()
    ours, foreign = child("sim-llama-decode", "5"), child("not-ours", "5")
    foreign["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone-else"
    api.objects = {("Service", "sim-llama-decode"): ours, ("Service", "not-ours"): foreign}
    await watched.cache.prime(api, CHILD_KINDS, ("serving",))
    record = watched.cache.get(KEY)
    assert record is not None and list(record.children) == [("Service", "sim-llama-decode")]
    assert await watched.queued() == []  # the pools' own events queue them
