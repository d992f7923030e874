"""A role's children: its connector's configuration (LMCache's ConfigMap), workload (Deployment or
LeaderWorkerSet), headless Service, PDB."""

from __future__ import annotations

from tandem.operator.build.budget import disruption_budget
from tandem.operator.build.engine import (
    HTTP_PORT,
    EngineContext,
    engine_pod_spec,
    template_annotations,
    worker_pod_spec,
)
from tandem.operator.build.meta import Manifest, manifest, metadata
from tandem.operator.capabilities import Capabilities
from tandem.operator.layout import RoleLayout
from tandem.operator.naming import (
    REPLICAS_BY_OPERATOR,
    REPLICAS_OWNER_ANNOTATION,
    PoolRef,
    Role,
)

# Engines hold GPUs: a rollout replaces pods in place instead of asking for spare GPUs.
ENGINE_ROLLOUT = {"maxSurge": 0, "maxUnavailable": 1}
# Model loads are slow; a rollout is declared stuck only after an hour.
PROGRESS_DEADLINE_SECONDS = 3600


def _workload_metadata(pool: PoolRef, layout: RoleLayout) -> Manifest:
    """Where an HPA or KEDA sets the replicas, the operator leaves both the count and the owner
    annotation to the handover (``autoscale.handover``), whose field manager then holds them."""
    meta = metadata(pool, pool.role_workload(layout.role), pool.engine_labels(layout.role))
    if not layout.external_replicas:
        meta["annotations"] = {REPLICAS_OWNER_ANNOTATION: REPLICAS_BY_OPERATOR}
    return meta


def _replicas(layout: RoleLayout) -> Manifest:
    return {} if layout.external_replicas else {"replicas": layout.replicas}


def deployment(ctx: EngineContext, layout: RoleLayout, config_digest: str | None) -> Manifest:
    pool, role = ctx.pool, layout.role
    labels = pool.engine_labels(role)
    return manifest(
        "apps/v1",
        "Deployment",
        _workload_metadata(pool, layout),
        spec={
            **_replicas(layout),
            "selector": {"matchLabels": pool.engine_selector(role)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": dict(ENGINE_ROLLOUT)},
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": template_annotations(config_digest)},
                "spec": engine_pod_spec(ctx, layout),
            },
        },
    )


def leader_worker_set(
    ctx: EngineContext, api_version: str, layout: RoleLayout, config_digest: str | None
) -> Manifest:
    """One group of pods per instance: the leader serves HTTP, the workers hold later pipeline stages."""
    pool, role = ctx.pool, layout.role
    labels = pool.engine_labels(role)
    annotations = template_annotations(config_digest)
    return manifest(
        api_version,
        "LeaderWorkerSet",
        _workload_metadata(pool, layout),
        spec={
            **_replicas(layout),
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdateConfiguration": dict(ENGINE_ROLLOUT)},
            "leaderWorkerTemplate": {
                "size": layout.nodes_per_replica,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                    "spec": engine_pod_spec(ctx, layout),
                },
                "workerTemplate": {
                    "metadata": {"labels": pool.worker_labels(role), "annotations": annotations},
                    "spec": worker_pod_spec(ctx, layout),
                },
            },
        },
    )


def headless_service(ctx: EngineContext, role: Role) -> Manifest:
    """The role's endpoints for the router (it reads the Service's EndpointSlices)."""
    named = [("http", HTTP_PORT), *ctx.kv.service_ports(ctx, role)]
    ports = [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"} for name, port in named]
    pool = ctx.pool
    return manifest(
        "v1",
        "Service",
        metadata(pool, pool.role_workload(role), pool.engine_labels(role)),
        spec={"clusterIP": "None", "selector": pool.engine_selector(role), "ports": ports},
    )


def role_objects(ctx: EngineContext, caps: Capabilities, role: Role) -> list[Manifest]:
    layout = ctx.layout.role(role)
    config = ctx.kv.role_config(ctx, layout)
    objects: list[Manifest] = list(config.objects)
    digest = config.digest
    if ctx.multi_node(layout):
        if caps.lws_api_version is None:
            raise ValueError(f"{role} spans nodes but the cluster serves no LeaderWorkerSet")
        objects.append(leader_worker_set(ctx, caps.lws_api_version, layout, digest))
    else:
        objects.append(deployment(ctx, layout, digest))
    objects.append(headless_service(ctx, role))
    if role is Role.DECODE:
        pool = ctx.pool
        name = pool.role_workload(role)
        objects.append(
            disruption_budget(
                caps, metadata(pool, name, pool.engine_labels(role)), pool.engine_selector(role)
            )
        )
    return objects
