"""No KV connector: the pool serves aggregated only (mode Never), so its requests never become
handoffs (the route choice never plans one for mode Never)."""

from __future__ import annotations

from tandem.router.connectors.base import Connector, ConnectorServices, HandoffJob
from tandem.router.errors import RouterError
from tandem.router.reply import Reply


class NoConnector(Connector):
    @classmethod
    def build(cls, services: ConnectorServices) -> NoConnector:
        return cls(services.upstream, services.registry, services.failed)

    async def handoff(self, job: HandoffJob) -> Reply:
        raise RouterError(
            f"pool {job.pool.name} has no KV connector: it serves no handoffs", code="no_handoffs"
        )
