"""Names and labels of a pool's children: the contract the router and users rely on.

Every child carries the recommended ``app.kubernetes.io/*`` labels plus ``tandem.dev/pool``; engine
pods add ``tandem.dev/role`` and llm-d's ``llm-d.ai/role`` so peers' tooling recognises them.
Selectors use only the pool and role (or component), which never change for a pool's lifetime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# Re-exported: the operator and its tests name every label through this module.
from tandem.api.resource import POOL_LABEL as POOL_LABEL
from tandem.api.resource import ROLE_LABEL as ROLE_LABEL

APP_NAME = "tandem"
MANAGED_BY = "tandem-operator"
FIELD_MANAGER = "tandem-operator"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
LLMD_ROLE_LABEL = "llm-d.ai/role"
ROUTER_COMPONENT = "router"
GATEWAY_COMPONENT = "gateway-api"  # the Gateway API Inference Extension InferencePool
# On a shared router's objects and pods (spec.router.shared), in place of tandem.dev/pool: they
# serve several pools, and each member pool owns them.
SHARED_ROUTER_LABEL = "tandem.dev/router"

# On each child: a digest of what the operator last applied, so a changed desired state is noticed
# even where the live object still contains every field of the new one (a field was removed).
DESIRED_HASH_ANNOTATION = "tandem.dev/desired-hash"
# On engine pod templates: a digest of their LMCache configuration, so a new one rolls the pods.
CONFIG_HASH_ANNOTATION = "tandem.dev/config-hash"
# On engine workloads: who sets their replicas, "operator" or "external" (an HPA or KEDA, with
# spec.autoscaling.mode External). The field manager that holds spec.replicas while the operator's
# own applies leave it out, until the HPA's first write takes it over (docs/autoscaling.md).
REPLICAS_OWNER_ANNOTATION = "tandem.dev/replicas-owner"
REPLICAS_BY_OPERATOR = "operator"
REPLICAS_BY_EXTERNAL = "external"
HANDOVER_FIELD_MANAGER = "tandem-operator-handover"

# Service names are DNS-1035 labels (63 characters); the longest suffix is "-prefill-lmcache".
_LONGEST_SUFFIX = len("-prefill-lmcache")
MAX_POOL_NAME = 63 - _LONGEST_SUFFIX
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class Role(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"


# How the names of a pool's own router, engines and notification Service end (PoolRef): a shared
# router named so could take another pool's objects over.
POOL_CHILD_SUFFIXES = ("-router", "-kv-notify", *(f"-{role}" for role in Role))


def shared_router_problem(name: str) -> str | None:
    """Why ``name`` cannot name a shared router (``spec.router.shared``), or None when it can."""
    suffix = next((end for end in POOL_CHILD_SUFFIXES if name.endswith(end)), None)
    if suffix is not None:
        return f"must not end in {suffix!r}: a pool's own objects are named <pool>{suffix}"
    return None


def pool_name_problem(name: str) -> str | None:
    """Why ``name`` cannot prefix the children's names, or None when it can."""
    if len(name) > MAX_POOL_NAME:
        return f"must be at most {MAX_POOL_NAME} characters (children are named <pool>-prefill-lmcache)"
    if not _DNS_1035.match(name):
        return "must be a DNS-1035 label (lower case letters, digits and '-', starting with a letter)"
    return None


@dataclass(frozen=True)
class PoolRef:
    """The pool a child belongs to: what names, labels and owner references are made from."""

    name: str
    namespace: str
    uid: str
    shared_router: str | None = None  # spec.router.shared: the router serving it is not its own

    def role_workload(self, role: Role) -> str:
        """Deployment (or LeaderWorkerSet), headless Service and PDB of a role."""
        return f"{self.name}-{role}"

    def lmcache_config(self, role: Role) -> str:
        return f"{self.name}-{role}-lmcache"

    @property
    def router(self) -> str:
        """Router Deployment, Service, ServiceAccount, Role, RoleBinding and PDB: the pool's own, or
        the shared router's."""
        return self.shared_router or f"{self.name}-router"

    @property
    def router_host(self) -> str:
        """The router Service's cluster DNS name (the pool's OpenAI endpoint)."""
        return f"{self.router}.{self.namespace}.svc.cluster.local"

    @property
    def notify(self) -> str:
        """The Service (and NetworkPolicy) of the routers' KV notification port, kept apart from
        the router Service so that it stays inside the cluster whatever that one's type."""
        return f"{self.name}-kv-notify"

    @property
    def notify_host(self) -> str:
        """Where prefillers send LMCache notifications (`pd_proxy_host`)."""
        return f"{self.notify}.{self.namespace}.svc.cluster.local"

    def _labels(self, component: str) -> dict[str, str]:
        return {
            NAME_LABEL: APP_NAME,
            INSTANCE_LABEL: self.name,
            COMPONENT_LABEL: component,
            MANAGED_BY_LABEL: MANAGED_BY,
            POOL_LABEL: self.name,
        }

    def engine_labels(self, role: Role) -> dict[str, str]:
        return {**self._labels(str(role)), ROLE_LABEL: str(role), LLMD_ROLE_LABEL: str(role)}

    def worker_labels(self, role: Role) -> dict[str, str]:
        """Non-leader pods of a multi-node instance: no role label, so Services never select them."""
        return self._labels(f"{role}-worker")

    def router_labels(self) -> dict[str, str]:
        return self._labels(ROUTER_COMPONENT)

    def gateway_labels(self) -> dict[str, str]:
        return self._labels(GATEWAY_COMPONENT)

    def engine_selector(self, role: Role) -> dict[str, str]:
        return {POOL_LABEL: self.name, ROLE_LABEL: str(role)}

    def router_selector(self) -> dict[str, str]:
        """The pods of the router serving the pool (its own, or the shared one)."""
        if self.shared_router is not None:
            return shared_router_selector(self.shared_router)
        return {POOL_LABEL: self.name, COMPONENT_LABEL: ROUTER_COMPONENT}


def shared_router_labels(name: str) -> dict[str, str]:
    """A shared router's objects and pods: no pool label, since they serve several."""
    return {
        NAME_LABEL: APP_NAME,
        INSTANCE_LABEL: name,
        COMPONENT_LABEL: ROUTER_COMPONENT,
        MANAGED_BY_LABEL: MANAGED_BY,
        SHARED_ROUTER_LABEL: name,
    }


def shared_router_selector(name: str) -> dict[str, str]:
    return {SHARED_ROUTER_LABEL: name, COMPONENT_LABEL: ROUTER_COMPONENT}
