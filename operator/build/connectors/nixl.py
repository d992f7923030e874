"""vLLM's NIXL connector, as the operator renders it: both roles are ``kv_both``; the decoder
pulls the KV over the side channel the prefill answer names (protocols.md), which each engine
serves on its pod IP at ``NIXL_SIDE_CHANNEL_PORT`` plus its DP rank (vLLM 0.33:
distributed/kv_transfer/kv_connector/v1/nixl/base_scheduler.py:77-80, ``data_parallel_index``, the
global DP rank: v1/engine/core.py:1545). A pod declares the ports of the ranks from 0 it runs: a
DP replica's one pod, or the leader of several (its secondaries' ranks continue the numbering)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tandem.operator.build.connectors.base import ConnectorEnv, NoHandoffParts, Port
from tandem.operator.build.meta import Manifest
from tandem.operator.naming import Role

if TYPE_CHECKING:
    from tandem.operator.build.engine import EngineContext

NIXL_SIDE_CHANNEL_PORT = 5600


class NixlProfile(NoHandoffParts):
    env: tuple[ConnectorEnv, ...] = (
        ConnectorEnv(
            "VLLM_NIXL_SIDE_CHANNEL_HOST",
            "the pod IP (NIXL pools)",
            value={"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ),
        ConnectorEnv(
            "VLLM_NIXL_SIDE_CHANNEL_PORT",
            f"{NIXL_SIDE_CHANNEL_PORT}, the pods' nixl-side port (NIXL pools)",
            value={"value": str(NIXL_SIDE_CHANNEL_PORT)},
        ),
    )

    def transfer_config(self, role: Role) -> Manifest | None:
        return {"kv_connector": "NixlConnector", "kv_role": "kv_both"}

    def engine_ports(self, ctx: EngineContext, role: Role) -> list[Port]:
        ranks = ctx.data_parallel_local(ctx.layout.role(role))
        if ranks == 1:
            return [("nixl-side", NIXL_SIDE_CHANNEL_PORT)]
        return [(f"nixl-side-{rank}", NIXL_SIDE_CHANNEL_PORT + rank) for rank in range(ranks)]


NIXL = NixlProfile()
