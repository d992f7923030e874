"""A KV connector as the operator renders it: the `KvProfile` each connector's module provides.

Everything the pods and Services of a pool get because of its connector comes from its profile:
vLLM's ``--kv-transfer-config`` per role, environment variables, ports, volumes, host memory,
per-role configuration objects, and the router-side objects the handoff needs. The builders ask the pool's
profile (``KV_PROFILES[layout.connector]``) and never test which connector it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tandem.api import InferencePoolSpec
from tandem.operator.build.managed import Managed
from tandem.operator.build.meta import Manifest
from tandem.operator.naming import PoolRef, Role

if TYPE_CHECKING:  # engine.py asks the profiles; they take its context
    from tandem.operator.build.engine import EngineContext
    from tandem.operator.layout import RoleLayout

Port = tuple[str, int]  # a named port: (name, number)


@dataclass(frozen=True, kw_only=True)
class ConnectorEnv(Managed):
    """An environment variable a connector gives every engine of its pools."""

    value: Manifest  # {"value": ...} or {"valueFrom": ...}

    def render(self) -> Manifest:
        return {"name": self.name, **self.value}


@dataclass(frozen=True)
class RoleConfig:
    """A role's configuration objects, and a digest of them that rolls its pods when they change."""

    objects: tuple[Manifest, ...] = ()
    digest: str | None = None


class KvProfile(Protocol):
    env: tuple[ConnectorEnv, ...]  # rendered in this order, after PYTHONHASHSEED
    env_prefix: Managed | None  # variables the connector reads over its rendered configuration

    def transfer_config(self, role: Role) -> Manifest | None:
        """vLLM's ``--kv-transfer-config`` for the role; None renders no flag."""

    def prefix_caching(self, ctx: EngineContext, role: RoleLayout) -> bool:
        """Whether the role's engines keep vLLM's prefix cache (`--enable-prefix-caching`)."""

    def engine_ports(self, ctx: EngineContext, role: Role) -> list[Port]:
        """Container ports beside ``http``."""

    def service_ports(self, ctx: EngineContext, role: Role) -> list[Port]:
        """Ports of the role's headless Service beside ``http`` (container ports of the same name)."""

    def volumes(self, ctx: EngineContext, role: RoleLayout) -> tuple[list[Manifest], list[Manifest]]:
        """Pod volumes and the engine container's mounts of them."""

    def host_memory_bytes(self, ctx: EngineContext, role: RoleLayout) -> int:
        """Host memory the connector holds in one engine pod beyond the engine's own (pinned KV)."""

    def role_config(self, ctx: EngineContext, role: RoleLayout) -> RoleConfig:
        """Objects the role's pods read, applied before them."""

    def notify_port(self, spec: InferencePoolSpec) -> int | None:
        """The port the pool's prefillers notify the router on (the router's ``--notify-port`` and
        ``kv-notify`` port); None: they send no notifications, and the router opens no such port."""

    def router_objects(
        self, pool: PoolRef, spec: InferencePoolSpec, *, network_policy: bool
    ) -> list[Manifest]:
        """Objects beside the router's, for a pool with prefillers; `network_policy`: with the
        NetworkPolicies that guard them."""


class NoHandoffParts:
    """A profile's parts when the connector needs none of them: no flag, env, ports, volumes,
    configuration or router-side objects. A connector's module subclasses it and overrides what it
    renders."""

    env: tuple[ConnectorEnv, ...] = ()
    env_prefix: Managed | None = None

    def transfer_config(self, role: Role) -> Manifest | None:
        return None

    def prefix_caching(self, ctx: EngineContext, role: RoleLayout) -> bool:
        return True

    def engine_ports(self, ctx: EngineContext, role: Role) -> list[Port]:
        return []

    def service_ports(self, ctx: EngineContext, role: Role) -> list[Port]:
        return []

    def volumes(self, ctx: EngineContext, role: RoleLayout) -> tuple[list[Manifest], list[Manifest]]:
        return [], []

    def host_memory_bytes(self, ctx: EngineContext, role: RoleLayout) -> int:
        return 0

    def role_config(self, ctx: EngineContext, role: RoleLayout) -> RoleConfig:
        return RoleConfig()

    def notify_port(self, spec: InferencePoolSpec) -> int | None:
        return None

    def router_objects(
        self, pool: PoolRef, spec: InferencePoolSpec, *, network_policy: bool
    ) -> list[Manifest]:
        return []


def digest(text: str) -> str:
    """A short digest of a configuration, for a pod-template annotation that rolls pods on change."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
