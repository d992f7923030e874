"""No KV connector: aggregated serving (mode Never). The engines get no ``--kv-transfer-config``
(vLLM then runs without a connector) and nothing else a handoff would need."""

from __future__ import annotations

from tandem.operator.build.connectors.base import NoHandoffParts


class NoConnectorProfile(NoHandoffParts):
    """Every part empty: aggregated engines need nothing for a handoff."""


NO_CONNECTOR = NoConnectorProfile()
