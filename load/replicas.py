"""A pool's replicas over time, as a run samples them (the reading itself is in :mod:`tandem.load.kube`).

Each sample is one Deployment of the pool (label ``tandem.dev/pool=NAME``): its desired replicas
(``spec.replicas``) and ready ones (``status.readyReplicas``), by role (``tandem.dev/role``; the
router's Deployment has none and is named ``NAME-router``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tandem.api import InferencePool
from tandem.api.resource import ROLE_LABEL
from tandem.load.clock import Clock

log = logging.getLogger(__name__)


class PoolError(RuntimeError):
    """The pool cannot be read: no credentials, no such pool, no permission, no API server."""


@dataclass(frozen=True)
class ReplicaSample:
    t_s: float  # seconds from the start of the run
    role: str  # prefill, decode, router
    desired: int
    ready: int


def replica_samples(pool: str, deployments: Iterable[Mapping[str, Any]], t_s: float) -> list[ReplicaSample]:
    """One sample per Deployment of the pool, read at ``t_s``."""
    samples = []
    for deployment in deployments:
        metadata = deployment.get("metadata") or {}
        labels = metadata.get("labels") or {}
        role = labels.get(ROLE_LABEL) or str(metadata.get("name", "")).removeprefix(f"{pool}-")
        spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
        samples.append(
            ReplicaSample(
                t_s=t_s,
                role=role,
                desired=int(spec.get("replicas", 1)),
                ready=int(status.get("readyReplicas") or 0),
            )
        )
    return sorted(samples, key=lambda s: s.role)


class PoolReader(Protocol):
    """What a run reads of a pool; failures are :class:`PoolError`."""

    name: str

    async def resource(self) -> InferencePool: ...

    async def deployments(self) -> list[dict[str, Any]]: ...


async def poll_replicas(
    reader: PoolReader, clock: Clock, interval_s: float, samples: list[ReplicaSample]
) -> None:
    """Until cancelled: append the pool's replicas to ``samples`` at 0, ``interval_s``, 2 ``interval_s``, ….

    A failed read is logged (once per message) and retried at the next tick: the chart shows a gap
    rather than the run stopping.
    """
    failures: set[str] = set()
    tick = 0
    while True:
        try:
            samples.extend(replica_samples(reader.name, await reader.deployments(), clock.now()))
        except PoolError as exc:
            if str(exc) not in failures:
                failures.add(str(exc))
                log.warning("%s; retrying every %g s", exc, interval_s)
        tick += 1
        await clock.sleep_until(tick * interval_s)
