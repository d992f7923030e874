"""One list of KV connector names (`tandem.api.KvConnector`), one registry per component: every
registry covers every name, the operator and the simulator agree with vLLM on each connector's
class name, and docs/add-a-kv-connector.md lists exactly the registered connectors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from paths import REPO
from protocol_facts import LMCACHE_CONSUMER, LMCACHE_PRODUCER, NIXL

from tandem.api import DisaggregationMode, KvConnector
from tandem.operator.build.connectors import KV_PROFILES
from tandem.operator.naming import Role
from tandem.planner.connectors import LAYOUT_RULES
from tandem.router.client_request import Kind, parse_client_request
from tandem.router.connectors import CONNECTORS, HandoffJob
from tandem.router.decision import Role as EndpointRole
from tandem.router.decision import RoutingPolicy
from tandem.router.endpoints import EndpointAddress, EndpointRegistry, EndpointState
from tandem.router.errors import RouterError
from tandem.router.pool import PoolConfig
from tandem.sim.kv_connectors import SIMULATED

ROOT = REPO
PAGE = ROOT / "docs" / "add-a-kv-connector.md"
REGISTRIES: dict[str, dict[KvConnector, Any]] = {
    "operator": KV_PROFILES,
    "planner": LAYOUT_RULES,
    "router": CONNECTORS,
    "simulator": SIMULATED,
}
# vLLM's `kv_connector` per connector and role, as protocols.md gives it (None: no flag at all).
VLLM_NAMES: dict[KvConnector, dict[Role, str | None]] = {
    KvConnector.LMCACHE: {
        Role.PREFILL: LMCACHE_PRODUCER["kv_connector"],
        Role.DECODE: LMCACHE_CONSUMER["kv_connector"],
    },
    KvConnector.NIXL: {Role.PREFILL: NIXL["kv_connector"], Role.DECODE: NIXL["kv_connector"]},
    KvConnector.NONE: {Role.PREFILL: None, Role.DECODE: None},
}


@pytest.mark.parametrize("side", sorted(REGISTRIES))
def test_every_registry_covers_every_connector_name(side: str) -> None:
    assert list(REGISTRIES[side]) == list(KvConnector)


@pytest.mark.parametrize("connector", list(KvConnector))
@pytest.mark.parametrize("role", list(Role))
def test_the_simulator_models_the_vllm_connector_the_operator_renders(
    connector: KvConnector, role: Role
) -> None:
    rendered = KV_PROFILES[connector].transfer_config(role)
    assert (None if rendered is None else rendered["kv_connector"]) == VLLM_NAMES[connector][role]
    assert SIMULATED[connector].vllm_name == VLLM_NAMES[connector][role]


async def test_the_routers_none_connector_refuses_a_handoff_rather_than_guessing_one() -> None:
    """Mode Never plans no handoff; were one asked of it, `none` fails it instead of running another
    connector's protocol (as an unknown connector once got LMCache's settings)."""
    request = parse_client_request(Kind.COMPLETION, b'{"prompt": "x", "max_tokens": 9}', "req-1")
    routing = RoutingPolicy(mode=DisaggregationMode.NEVER)
    config = PoolConfig(name="p", model="m", routing=routing, connector=KvConnector.NONE)
    decoder, prefiller = (
        EndpointState(EndpointAddress(url), "p", role)
        for url, role in (
            ("http://10.0.0.1:8000", EndpointRole.DECODE),
            ("http://10.0.0.2:8000", EndpointRole.PREFILL),
        )
    )
    upstream: Any = None  # never called
    connector = CONNECTORS[KvConnector.NONE](upstream, EndpointRegistry(), lambda state, error: None)
    with pytest.raises(RouterError, match="pool p has no KV connector"):
        await connector.handoff(HandoffJob(request, config, decoder, prefiller, [1, 2, 3], 9))


def _documented_rows() -> list[list[str]]:
    section = PAGE.read_text().split("## Connectors", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row] for row in rows]


def test_the_documented_connectors_are_the_registered_ones() -> None:
    assert [row[0] for row in _documented_rows()] == [f"`{name}`" for name in KvConnector]


def test_the_documented_modules_exist() -> None:
    modules = [m for row in _documented_rows() for m in re.findall(r"`([\w/]+\.py)`", "|".join(row[2:]))]
    assert len(modules) == 3 * len(KvConnector)
    assert [m for m in modules if not (ROOT / m).is_file()] == []
