"""Static discovery: one pool whose engines are given by URL, and fixed peer replicas."""

from __future__ import annotations

from tandem.router.decision import Role
from tandem.router.discovery.sink import DiscoverySink
from tandem.router.endpoints import EndpointAddress
from tandem.router.settings import RouterSettings, StaticPoolSettings


def publish_static(static: StaticPoolSettings, settings: RouterSettings, sink: DiscoverySink) -> None:
    config = static.pool_config(settings.prefill_saturation)
    sink.set_pool(config)
    sink.set_endpoints(config.name, Role.PREFILL, [EndpointAddress(url) for url in static.prefill])
    sink.set_endpoints(config.name, Role.DECODE, [EndpointAddress(url) for url in static.decode])
    sink.set_peers(config.name, (*settings.notify_peers, settings.replica_id()))
    sink.mark_synced(config.name)
