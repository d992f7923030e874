"""The KV connectors the operator renders, by the API's name for each (``tandem.api.KvConnector``).

Adding a connector is a module here that provides a `KvProfile` and one line in `KV_PROFILES`
(docs/add-a-kv-connector.md).
"""

from tandem.api import KvConnector
from tandem.operator.build.connectors.base import KvProfile
from tandem.operator.build.connectors.lmcache import LMCACHE
from tandem.operator.build.connectors.nixl import NIXL
from tandem.operator.build.connectors.none import NO_CONNECTOR

KV_PROFILES: dict[KvConnector, KvProfile] = {
    KvConnector.LMCACHE: LMCACHE,
    KvConnector.NIXL: NIXL,
    KvConnector.NONE: NO_CONNECTOR,
}

__all__ = ["KV_PROFILES", "KvProfile"]
