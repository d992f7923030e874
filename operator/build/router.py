"""The router's children: Deployment, Service, ServiceAccount, Role, RoleBinding and PDB.

The router watches its pool and the engines' EndpointSlices; its Role grants exactly that, in the
pool's namespace. Prefillers send LMCache notifications to the Service's ``kv-notify`` port.
"""

from __future__ import annotations

from tandem.api import GROUP, PLURAL, InferencePoolSpec
from tandem.operator.build.budget import disruption_budget
from tandem.operator.build.engine import http_get, pod_security
from tandem.operator.build.meta import Manifest, manifest, metadata
from tandem.operator.capabilities import Capabilities
from tandem.operator.naming import PoolRef
from tandem.operator.settings import Images

API_KEYS_DIR = "/etc/tandem/api-keys"
ROUTER_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def router_rules(pool: PoolRef) -> list[Manifest]:
    return [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": [GROUP],
            "resources": [PLURAL],
            "resourceNames": [pool.name],
            "verbs": ["get", "list", "watch"],
        },
    ]


def _container(pool: PoolRef, spec: InferencePoolSpec, images: Images) -> Manifest:
    router, lmcache = spec.router, spec.disaggregation.kv_transfer.lmcache
    args = [
        "--pool", pool.name,
        "--namespace", pool.namespace,
        "--port", str(router.service.port),
        "--notify-port", str(lmcache.proxy_port),
    ]  # fmt: skip
    container: Manifest = {
        "name": "router",
        "image": router.image or images.tandem,
        "command": ["tandem", "router"],
        "args": args,
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [
            {"name": "http", "containerPort": router.service.port, "protocol": "TCP"},
            {"name": "kv-notify", "containerPort": lmcache.proxy_port, "protocol": "TCP"},
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
    if router.api_key_secret is not None:
        key = router.api_key_secret.key
        container["args"] = [*args, "--api-keys-file", f"{API_KEYS_DIR}/{key}"]
        container["volumeMounts"] = [{"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True}]
    return container


def router_deployment(pool: PoolRef, spec: InferencePoolSpec, images: Images) -> Manifest:
    labels = pool.router_labels()
    pod: Manifest = {
        "serviceAccountName": pool.router,
        "enableServiceLinks": False,
        "securityContext": pod_security(images),
        "containers": [_container(pool, spec, images)],
    }
    secret = spec.router.api_key_secret
    if secret is not None:
        items = [{"key": secret.key, "path": secret.key}]
        pod["volumes"] = [{"name": "api-keys", "secret": {"secretName": secret.name, "items": items}}]
    return manifest(
        "apps/v1",
        "Deployment",
        metadata(pool, pool.router, labels),
        spec={
            "replicas": spec.router.replicas,
            "selector": {"matchLabels": pool.router_selector()},
            # Routers are cheap: start the new one before stopping the old.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    )


def router_service(pool: PoolRef, spec: InferencePoolSpec) -> Manifest:
    service = spec.router.service
    proxy_port = spec.disaggregation.kv_transfer.lmcache.proxy_port
    return manifest(
        "v1",
        "Service",
        metadata(pool, pool.router, pool.router_labels()),
        spec={
            "type": service.type,
            "selector": pool.router_selector(),
            "ports": [
                {"name": "http", "port": service.port, "targetPort": "http", "protocol": "TCP"},
                {"name": "kv-notify", "port": proxy_port, "targetPort": "kv-notify", "protocol": "TCP"},
            ],
        },
    )


def router_objects(
    pool: PoolRef, spec: InferencePoolSpec, images: Images, caps: Capabilities
) -> list[Manifest]:
    labels = pool.router_labels()
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": pool.router}
    subject = {"kind": "ServiceAccount", "name": pool.router, "namespace": pool.namespace}
    return [
        manifest("v1", "ServiceAccount", metadata(pool, pool.router, labels)),
        manifest(
            "rbac.authorization.k8s.io/v1",
            "Role",
            metadata(pool, pool.router, labels),
            rules=router_rules(pool),
        ),
        manifest(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            metadata(pool, pool.router, labels),
            roleRef=role_ref,
            subjects=[subject],
        ),
        router_deployment(pool, spec, images),
        router_service(pool, spec),
        disruption_budget(pool, caps, pool.router, labels, pool.router_selector()),
    ]
