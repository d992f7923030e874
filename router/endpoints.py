"""Endpoint state: what the router knows of each engine between decisions.

Discovery replaces the set of endpoints per pool and role; the data path counts its open requests
and LMCache buffer reservations; the monitor records scraped engine load and each endpoint's
outlier record (router/outlier.py: in rotation, ejected, on trial). Decisions see frozen
`EndpointSnapshot`s of this state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from tandem.router.decision import EndpointSnapshot, Role
from tandem.router.outlier import CLEAN, Outlier


@dataclass(frozen=True, slots=True)
class EndpointAddress:
    url: str  # http://<ip>:<port>
    name: str | None = None  # the pod behind it, for logs
    host: str = field(init=False, compare=False)  # the IP: KV receiver host, NIXL remote_host

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", urlsplit(self.url).hostname or "")


@dataclass(slots=True)
class EndpointState:
    address: EndpointAddress
    pool: str
    role: Role
    in_flight: int = 0
    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0
    outlier: Outlier = CLEAN  # set with `record`
    healthy: bool = True  # in rotation: the outlier record's, kept here for the data path
    buffer_reserved: int = 0  # LMCache PD buffer chunks held by handoffs in progress (pd_buffer.py)
    buffer_short_since: float | None = None  # since when too full for the smallest handoff

    @property
    def url(self) -> str:
        return self.address.url

    def record(self, outlier: Outlier) -> None:
        self.outlier = outlier
        self.healthy = outlier.in_rotation

    def snapshot(self, buffer_chunks: int | None, engines: int = 1) -> EndpointSnapshot:
        return EndpointSnapshot(
            url=self.url,
            host=self.address.host,
            role=self.role,
            in_flight=self.in_flight,
            running=self.running,
            waiting=self.waiting,
            kv_usage=self.kv_usage,
            healthy=self.healthy,
            failures=self.outlier.failures,
            buffer_free_chunks=None if buffer_chunks is None else buffer_chunks - self.buffer_reserved,
            engines=engines,
        )


_NONE: Mapping[str, EndpointState] = MappingProxyType({})  # an absent role's endpoints


class EndpointRegistry:
    """Endpoints per (pool, role), keyed by URL. Owned by the app; touched only on the event loop."""

    def __init__(self) -> None:
        self._roles: dict[tuple[str, Role], dict[str, EndpointState]] = {}

    def replace(self, pool: str, role: Role, addresses: Iterable[EndpointAddress]) -> list[EndpointState]:
        """Set the endpoints of a role, keeping the state of those still present. Returns those removed."""
        current = self._roles.setdefault((pool, role), {})
        fresh = {a.url: a for a in addresses}
        removed = [current.pop(url) for url in list(current) if url not in fresh]
        for url, address in fresh.items():
            if url in current:
                current[url].address = address
            else:
                current[url] = EndpointState(address, pool, role)
        return removed

    def drop_pool(self, pool: str) -> None:
        for key in [k for k in self._roles if k[0] == pool]:
            del self._roles[key]

    def states(self, pool: str, role: Role) -> list[EndpointState]:
        return list(self._roles.get((pool, role), {}).values())

    def snapshots(
        self, pool: str, role: Role, buffer_chunks: int | None = None, engines: int = 1
    ) -> tuple[EndpointSnapshot, ...]:
        """`engines`: DP ranks behind each endpoint of the role."""
        chunks = buffer_chunks if role == Role.DECODE else None
        return tuple([s.snapshot(chunks, engines) for s in self._roles.get((pool, role), _NONE).values()])

    def find(self, pool: str, role: Role, url: str) -> EndpointState | None:
        return self._roles.get((pool, role), {}).get(url)

    def __iter__(self) -> Iterator[EndpointState]:
        for states in list(self._roles.values()):
            yield from list(states.values())

    def available(self, pool: str, role: Role) -> int:
        """Endpoints in rotation (asked on every admission: no copies)."""
        return sum([s.healthy for s in self._roles.get((pool, role), _NONE).values()])

    def lease(self, state: EndpointState) -> Lease:
        """Count a request open on the endpoint until the lease is released (or its block ends)."""
        state.in_flight += 1
        return Lease(state)


class Lease:
    """A request open on an endpoint. Plain class, not a generator: it is on every request's path."""

    __slots__ = ("_state",)

    def __init__(self, state: EndpointState) -> None:
        self._state: EndpointState | None = state

    def release(self) -> None:
        """Idempotent."""
        if self._state is not None:
            self._state.in_flight -= 1
            self._state = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
