"""The resolved layout: what the builders render, with every automatic field filled.

The builders depend on this small model only, never on the planner's internals. ``resolve_layout``
is the one place where the plan and the user's pinned fields meet (pinned fields win).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from tandem.api import EngineTiming, KvConnector
from tandem.api.spec import Toleration
from tandem.operator.naming import Role


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RoleLayout(_Frozen):
    """One engine role: its hardware, parallelism, replicas and how fast one instance runs."""

    role: Role
    gpu_type: str = Field(min_length=1)
    tensor_parallel: int = Field(ge=1)
    pipeline_parallel: int = Field(ge=1)
    replicas: int = Field(ge=0)
    gpus_per_node: int = Field(ge=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    timing: EngineTiming
    extra_args: tuple[str, ...] = ()
    resources: dict[str, dict[str, str]] | None = None

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def nodes_per_replica(self) -> int:
        """Nodes one instance spans: more than one only with pipeline stages on several nodes."""
        return math.ceil(self.gpus_per_replica / self.gpus_per_node)

    @property
    def gpus_per_pod(self) -> int:
        return self.gpus_per_replica // self.nodes_per_replica


class PoolLayout(_Frozen):
    """Both roles plus what the router and the KV handoff need."""

    prefill: RoleLayout
    decode: RoleLayout
    prompt_tokens_threshold: int = Field(ge=0)
    connector: KvConnector
    max_model_len: int | None = Field(default=None, ge=16)

    def role(self, role: Role) -> RoleLayout:
        return self.prefill if role is Role.PREFILL else self.decode
