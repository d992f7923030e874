"""Discovery: which pools the router serves and which engine endpoints each pool has.

`static` takes them from the command line; `kubernetes` watches the pool's InferencePool and the
EndpointSlices of its `<pool>-prefill`, `<pool>-decode` and `<pool>-kv-notify` Services. Both report
to a `DiscoverySink` (the router's state), so the data path never knows which one runs.
"""

from tandem.router.discovery.sink import DiscoverySink

__all__ = ["DiscoverySink"]
