"""KV handoff connectors: how a request runs as a prefill on one engine and a decode on another.

`lmcache` (the default) drives LMCache's PD mode: the router tokenizes, names the decoder in the
prefill request, and decodes once the prefiller's notifications say the KV has arrived. `nixl`
relays vLLM's `kv_transfer_params` from the prefill answer to the decode request. `none` serves
aggregated pools, which hand nothing off. `CONNECTORS` (registry.py) holds them by name.
"""

from tandem.router.connectors.base import Connector, ConnectorServices, HandoffJob
from tandem.router.connectors.handoff import HandoffDrainer, LmcacheHandoff
from tandem.router.connectors.lmcache import LmcacheConnector
from tandem.router.connectors.nixl import NixlConnector
from tandem.router.connectors.notify import NotificationHub
from tandem.router.connectors.registry import CONNECTORS, build_connectors

__all__ = [
    "CONNECTORS",
    "Connector",
    "ConnectorServices",
    "HandoffDrainer",
    "HandoffJob",
    "LmcacheConnector",
    "LmcacheHandoff",
    "NixlConnector",
    "NotificationHub",
    "build_connectors",
]
