"""The frozen inputs of a routing decision: endpoints as seen now, the request, the pool's policy."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import msgspec

from tandem.api.spec import BalancePolicy, DisaggregationMode


class Role(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"


class EndpointSnapshot(msgspec.Struct, frozen=True):  # built per request: its __init__ in C
    """One engine endpoint at the moment of the decision."""

    url: str  # base URL, http://<pod-ip>:<port>
    host: str  # pod IP: the decoder's KV receiver, the prefiller's NIXL remote_host
    role: Role
    in_flight: int = 0  # requests this router has open on it
    running: float = 0.0  # vllm:num_requests_running, last scrape
    waiting: float = 0.0  # vllm:num_requests_waiting, last scrape
    kv_usage: float = 0.0  # vllm:kv_cache_usage_perc in [0, 1]
    healthy: bool = True  # in rotation
    failures: int = 0  # requests it failed in a row, since its last success
    buffer_free_chunks: int | None = None  # LMCache PD buffer chunks free on a decoder; None: not tracked
    engines: int = 1  # DP ranks behind the endpoint, which vLLM balances among (its internal DP LB)

    @property
    def load(self) -> float:
        """Open requests. The router's own count is exact for its requests; the engine's count
        includes other replicas' requests but lags by a scrape interval, so take the larger."""
        return max(float(self.in_flight), self.running + self.waiting)

    @property
    def load_per_engine(self) -> float:
        """Open requests per DP rank: what one engine's batch holds when vLLM spreads them."""
        return self.load / self.engines

    @property
    def kv_usage_per_engine(self) -> float:
        """The ranks' mean KV cache fill (the scrape sums the gauge over their `engine` labels)."""
        return self.kv_usage / self.engines


class RequestFacts(msgspec.Struct, frozen=True):  # built per request: its __init__ in C
    prompt_tokens: int  # exact or estimated
    exact: bool  # counted by the engine's tokenizer
    splittable: bool = True  # one choice, no echo: a prefill/decode split can reproduce the answer
    session_key: str | None = None  # session-affinity key (header or `user`)
    prefix_key: str | None = None  # hash of the prompt's beginning, for prefix locality


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    mode: DisaggregationMode = DisaggregationMode.AUTO
    threshold: int = 1024  # prompt tokens from which a request becomes a handoff pair
    balance: BalancePolicy = BalancePolicy.LEAST_LOAD
    prefill_saturation: float = 16.0  # a prefiller with this load or more takes no handoff
    pd_chunk_tokens: int | None = None  # LMCache chunk size when decoders' PD buffers are admitted against

    def pd_chunks(self, prompt_tokens: int) -> int:
        """Decoder PD buffer chunks a handoff of this prompt occupies (0 when not tracked)."""
        if self.pd_chunk_tokens is None:
            return 0
        return -(-prompt_tokens // self.pd_chunk_tokens)
