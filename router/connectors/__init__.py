"""KV handoff connectors: how a request runs as a prefill on one engine and a decode on another.

`lmcache` (the default) drives LMCache's PD mode: the router tokenizes, names the decoder in the
prefill request, and decodes once the prefiller's notifications say the KV has arrived. `nixl`
relays vLLM's `kv_transfer_params` from the prefill answer to the decode request.
"""

from tandem.router.connectors.base import Connector, HandoffJob
from tandem.router.connectors.lmcache import LmcacheConnector
from tandem.router.connectors.nixl import NixlConnector
from tandem.router.connectors.notify import NotificationHub

__all__ = ["Connector", "HandoffJob", "LmcacheConnector", "NixlConnector", "NotificationHub"]
