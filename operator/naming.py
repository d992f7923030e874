"""Names and labels of a pool's children: the contract the router and users rely on.

Every child carries the recommended ``app.kubernetes.io/*`` labels plus ``tandem.dev/pool``; engine
pods add ``tandem.dev/role`` and llm-d's ``llm-d.ai/role`` so peers' tooling recognises them.
Selectors use only the pool and role (or component), which never change for a pool's lifetime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

APP_NAME = "tandem"
MANAGED_BY = "tandem-operator"
FIELD_MANAGER = "tandem-operator"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
POOL_LABEL = "tandem.dev/pool"
ROLE_LABEL = "tandem.dev/role"
LLMD_ROLE_LABEL = "llm-d.ai/role"
ROUTER_COMPONENT = "router"

# On each child: a digest of what the operator last applied, so a changed desired state is noticed
# even where the live object still contains every field of the new one (a field was removed).
DESIRED_HASH_ANNOTATION = "tandem.dev/desired-hash"
# On engine pod templates: a digest of their LMCache configuration, so a new one rolls the pods.
CONFIG_HASH_ANNOTATION = "tandem.dev/config-hash"

# Service names are DNS-1035 labels (63 characters); the longest suffix is "-prefill-lmcache".
_LONGEST_SUFFIX = len("-prefill-lmcache")
MAX_POOL_NAME = 63 - _LONGEST_SUFFIX
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class Role(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"


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

    def role_workload(self, role: Role) -> str:
        """Deployment (or LeaderWorkerSet), headless Service and PDB of a role."""
        return f"{self.name}-{role}"

    def lmcache_config(self, role: Role) -> str:
        return f"{self.name}-{role}-lmcache"

    @property
    def router(self) -> str:
        """Router Deployment, Service, ServiceAccount, Role, RoleBinding and PDB."""
        return f"{self.name}-router"

    @property
    def router_host(self) -> str:
        """The router Service's cluster DNS name (where prefillers send KV notifications)."""
        return f"{self.router}.{self.namespace}.svc.cluster.local"

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

    def engine_selector(self, role: Role) -> dict[str, str]:
        return {POOL_LABEL: self.name, ROLE_LABEL: str(role)}

    def router_selector(self) -> dict[str, str]:
        return {POOL_LABEL: self.name, COMPONENT_LABEL: ROUTER_COMPONENT}
