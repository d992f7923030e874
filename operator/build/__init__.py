"""Pure builders: a pool's spec and resolved layout in, the Kubernetes objects it should own out.

Nothing here talks to the cluster; ``Capabilities`` says which API versions to render.
"""

from __future__ import annotations

from tandem.api import InferencePoolSpec
from tandem.operator.build.engine import EngineContext
from tandem.operator.build.gateway import gateway_inference_pool
from tandem.operator.build.meta import Manifest
from tandem.operator.build.roles import role_objects
from tandem.operator.build.router import SharedRouter, router_objects
from tandem.operator.capabilities import Capabilities
from tandem.operator.layout import PoolLayout
from tandem.operator.naming import PoolRef, Role
from tandem.operator.settings import Images

__all__ = ["Manifest", "SharedRouter", "desired_objects", "missing_capability"]


def missing_capability(spec: InferencePoolSpec, layout: PoolLayout, caps: Capabilities) -> str | None:
    """Why this cluster cannot run the layout (naming the field that decides it), or None."""
    for role in Role:
        placed = layout.role(role)
        if EngineContext.spans_nodes(spec, placed) and caps.lws_api_version is None:
            shape = (
                f"pipelineParallel={placed.pipeline_parallel}"
                if placed.data_parallel == 1
                else f"tensorParallel={placed.tensor_parallel} (the plan's DP={placed.data_parallel})"
            )
            return (
                f"spec.{role}.{shape}: one instance needs "
                f"{placed.gpus_per_replica} GPUs on {placed.nodes_per_replica} nodes of "
                f"{placed.gpus_per_node}, which takes a LeaderWorkerSet (leaderworkerset.x-k8s.io) "
                "and the cluster does not serve one"
            )
    return None


def desired_objects(
    pool: PoolRef,
    spec: InferencePoolSpec,
    layout: PoolLayout,
    images: Images,
    caps: Capabilities,
    *,
    network_policy: bool = False,
    shared: SharedRouter | None = None,
) -> list[Manifest]:
    """Every child of the pool, in apply order (config before the pods that mount it);
    `network_policy`: with the NetworkPolicy that guards the notification port; the GIE
    InferencePool where ``spec.gatewayAPI`` asks for it and the cluster serves its kind;
    ``shared``: the router the pool shares (``spec.router.shared``), in place of its own."""
    ctx = EngineContext(pool=pool, spec=spec, layout=layout, images=images)
    objects = [
        *role_objects(ctx, caps, Role.PREFILL),
        *role_objects(ctx, caps, Role.DECODE),
        *router_objects(pool, spec, layout, images, caps, network_policy=network_policy, shared=shared),
    ]
    if spec.gateway_api is not None and caps.gie_api_version is not None:
        objects.append(gateway_inference_pool(pool, spec.gateway_api, caps.gie_api_version))
    return objects
