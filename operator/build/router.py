"""The router's children: Deployment, Service, ServiceAccount, Role, RoleBinding, PDB, and what
the pool's KV connector adds (LMCache: the notification port's Service and, when the operator
renders NetworkPolicies, its NetworkPolicy).

The notification port (``--notify-port``, container port ``kv-notify``) takes unauthenticated
frames, so a router has it only where a pool it serves can notify: its connector's profile names a
port (``KvProfile.notify_port``: LMCache; not NIXL, nor mode Never's none) and, for a router of its
own, the pool runs prefillers (``PoolLayout.hands_off``: not an aggregated plan). A shared router
has it where any member's connector names one (the members do not read each other's plans), and
each such member renders its connector's objects, the NetworkPolicy among them, whatever its plan.

The router watches its pools and the engines' EndpointSlices; its Role grants exactly that, in the
pools' namespace. Clients reach the router Service (of the type the spec asks for).

A pool has a router of its own (``<pool>-router``, owned by the pool) unless ``spec.router.shared``
names a router it shares with other pools of its namespace: then the router's objects are named so,
serve every member pool and are owned by each member, none as controller (the garbage collector
removes them with the last member). The connector's objects stay the pool's own, pointed at the
router that serves it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tandem.api import GROUP, PLURAL, InferencePoolSpec, tracing
from tandem.operator.build.budget import disruption_budget
from tandem.operator.build.connectors import KV_PROFILES
from tandem.operator.build.engine import http_get, pod_security
from tandem.operator.build.meta import Manifest, manifest, metadata, shared_metadata
from tandem.operator.capabilities import Capabilities
from tandem.operator.layout import PoolLayout
from tandem.operator.naming import PoolRef, shared_router_labels, shared_router_selector
from tandem.operator.settings import Images

API_KEYS_DIR = "/etc/tandem/api-keys"
ROUTER_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


@dataclass(frozen=True)
class SharedRouter:
    """A router pools share (``spec.router.shared``): its name, its members (sorted by name: the
    pools it serves and its owners) and the spec its Deployment and Service follow (its first
    member's; the others agree on those fields, ``tandem.operator.shared_router``)."""

    name: str
    members: tuple[PoolRef, ...]
    spec: InferencePoolSpec
    notify_port: int | None  # the first member's whose connector notifies; None: no member's does


@dataclass(frozen=True)
class _Router:
    """What one router's objects are made from, its own pool's or shared."""

    name: str
    namespace: str
    pools: tuple[str, ...]  # the InferencePools it serves
    labels: dict[str, str]
    selector: dict[str, str]
    meta: Callable[[], Manifest]  # a fresh copy of its objects' metadata
    spec: InferencePoolSpec  # whose router fields it follows
    notify_port: int | None  # where it takes KV notifications; None: it opens no such port


def _own(pool: PoolRef, spec: InferencePoolSpec, layout: PoolLayout) -> _Router:
    labels = pool.router_labels()
    notify_port = KV_PROFILES[layout.connector].notify_port(spec) if layout.hands_off else None
    return _Router(
        pool.router, pool.namespace, (pool.name,), labels, pool.router_selector(),
        lambda: metadata(pool, pool.router, labels), spec, notify_port,
    )  # fmt: skip


def _shared(shared: SharedRouter) -> _Router:
    labels = shared_router_labels(shared.name)
    return _Router(
        shared.name, shared.members[0].namespace, tuple(m.name for m in shared.members), labels,
        shared_router_selector(shared.name), lambda: shared_metadata(shared.members, shared.name, labels),
        shared.spec, shared.notify_port,
    )  # fmt: skip


def router_rules(pools: tuple[str, ...]) -> list[Manifest]:
    return [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": [GROUP],
            "resources": [PLURAL],
            "resourceNames": list(pools),
            "verbs": ["get", "list", "watch"],
        },
    ]


def _container(router: _Router, images: Images) -> Manifest:
    spec, notify = router.spec.router, router.notify_port
    args = [
        *(arg for pool in router.pools for arg in ("--pool", pool)),
        "--namespace", router.namespace,
        "--port", str(spec.service.port),
        *(() if notify is None else ("--notify-port", str(notify))),
    ]  # fmt: skip
    if spec.debug:
        args.append("--debug")
    container: Manifest = {
        "name": "router",
        "image": spec.image or images.tandem,
        "command": ["tandem", "router"],
        "args": args,
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            *_tracing_env(router.spec),
        ],
        "ports": [
            {"name": "http", "containerPort": spec.service.port, "protocol": "TCP"},
            *([] if notify is None else [{"name": "kv-notify", "containerPort": notify, "protocol": "TCP"}]),
        ],
        "readinessProbe": http_get("/ready", periodSeconds=5, timeoutSeconds=3, failureThreshold=3),
        "livenessProbe": http_get("/health", periodSeconds=10, timeoutSeconds=5, failureThreshold=6),
        "resources": {section: dict(values) for section, values in ROUTER_RESOURCES.items()},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }
    if spec.api_key_secret is not None:
        key = spec.api_key_secret.key
        container["args"] = [*args, "--api-keys-file", f"{API_KEYS_DIR}/{key}"]
        container["volumeMounts"] = [{"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True}]
    return container


def _tracing_env(spec: InferencePoolSpec) -> list[Manifest]:
    traced = spec.router.tracing
    return [] if traced is None else [{"name": k, "value": v} for k, v in tracing.router_env(traced).items()]


def _deployment(router: _Router, images: Images) -> Manifest:
    pod: Manifest = {
        "serviceAccountName": router.name,
        "enableServiceLinks": False,
        "securityContext": pod_security(images),
        "containers": [_container(router, images)],
    }
    secret = router.spec.router.api_key_secret
    if secret is not None:
        items = [{"key": secret.key, "path": secret.key}]
        pod["volumes"] = [{"name": "api-keys", "secret": {"secretName": secret.name, "items": items}}]
    return manifest(
        "apps/v1",
        "Deployment",
        router.meta(),
        spec={
            "replicas": router.spec.router.replicas,
            "selector": {"matchLabels": dict(router.selector)},
            # Routers are cheap: start the new one before stopping the old.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            "template": {"metadata": {"labels": dict(router.labels)}, "spec": pod},
        },
    )


def _service(router: _Router) -> Manifest:
    service = router.spec.router.service
    return manifest(
        "v1",
        "Service",
        router.meta(),
        spec={
            "type": service.type,
            "selector": dict(router.selector),
            "ports": [{"name": "http", "port": service.port, "targetPort": "http", "protocol": "TCP"}],
        },
    )


def _router_objects(router: _Router, images: Images) -> list[Manifest]:
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": router.name}
    subject = {"kind": "ServiceAccount", "name": router.name, "namespace": router.namespace}
    return [
        manifest("v1", "ServiceAccount", router.meta()),
        manifest("rbac.authorization.k8s.io/v1", "Role", router.meta(), rules=router_rules(router.pools)),
        manifest(
            "rbac.authorization.k8s.io/v1", "RoleBinding", router.meta(), roleRef=role_ref, subjects=[subject]
        ),
        _deployment(router, images),
        _service(router),
    ]


def router_objects(
    pool: PoolRef,
    spec: InferencePoolSpec,
    layout: PoolLayout,
    images: Images,
    caps: Capabilities,
    *,
    network_policy: bool,
    shared: SharedRouter | None = None,
) -> list[Manifest]:
    """The router's objects and the connector's beside them; ``shared``: the router ``pool`` shares
    (``pool.shared_router`` names it), rendered alike by every member."""
    router = _own(pool, spec, layout) if shared is None else _shared(shared)
    # A shared router opens its port for any member that could notify, so each such member keeps its
    # Service and NetworkPolicy whatever its plan: the port is never without the policy.
    notifying = layout.hands_off or shared is not None
    profile = KV_PROFILES[layout.connector]
    kv = profile.router_objects(pool, spec, network_policy=network_policy) if notifying else []
    budget = disruption_budget(caps, router.meta(), dict(router.selector))
    return [*_router_objects(router, images), *kv, budget]
