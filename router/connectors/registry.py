"""The router's KV connectors, by the API's name for each (``tandem.api.KvConnector``): a
`Connector` class holds the handoff, what it needs of its pools' configuration (`pd_buffer`,
`notifications`) and how the app builds it (`build`).

Adding a connector is a module beside this one and one line here (docs/add-a-kv-connector.md).
"""

from __future__ import annotations

from tandem.api.spec import KvConnector
from tandem.router.connectors.base import Connector, ConnectorServices
from tandem.router.connectors.lmcache import LmcacheConnector
from tandem.router.connectors.nixl import NixlConnector
from tandem.router.connectors.none import NoConnector

CONNECTORS: dict[KvConnector, type[Connector]] = {
    KvConnector.LMCACHE: LmcacheConnector,
    KvConnector.NIXL: NixlConnector,
    KvConnector.NONE: NoConnector,
}


def build_connectors(services: ConnectorServices) -> dict[KvConnector, Connector]:
    """One connector of each kind, for the app's pools to share."""
    return {name: kind.build(services) for name, kind in CONNECTORS.items()}
