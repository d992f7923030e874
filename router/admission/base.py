"""The admission policy interface: the order of a pool's waiting requests (`key`) and when the
queue sheds a newcomer (`full`), with what a policy needs to know of each request (`needs`) and of
the requests it let go (`admitted`, for policies that adapt)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

import msgspec

from tandem.api.timing import EngineTiming

Clock = Callable[[], float]
# The answer length predicted for a request that sets none (chat: up to the rest of the context)
# while the pool's context length is not known yet.
UNKNOWN_ANSWER_TOKENS = 1024


class Need(StrEnum):
    """Ticket facts that cost something to compute: the dispatcher fills those the policy needs."""

    GPU_TIME = "gpu_time"  # the request's predicted GPU seconds (`GpuTime`)


class Ticket(msgspec.Struct, frozen=True):  # built per request: its __init__ in C
    priority: int = 0
    deadline: float = 0.0  # time.monotonic() by which the first token is due
    arrival: float = 0.0  # time.monotonic() when the request came
    gpu_s: float = 0.0  # predicted GPU seconds (only for a policy that needs Need.GPU_TIME)


@dataclass(frozen=True, slots=True)
class GpuTime:
    """A request's predicted GPU time on the pool: its prompt's prefill (on a prefiller's timing,
    or the decoder's in an aggregated pool) and its answer's share of the decoder's steps."""

    prefill: EngineTiming
    decode: EngineTiming

    def seconds(self, prompt_tokens: int, requested: int | None, max_model_len: int | None) -> float:
        """`requested`: the answer tokens asked for (None: no limit, the rest of the context)."""
        if requested is None:
            requested = (
                UNKNOWN_ANSWER_TOKENS if max_model_len is None else max(max_model_len - prompt_tokens, 0)
            )
        ms = self.prefill.prefill_ms(prompt_tokens) + self.decode.decode_share_ms(prompt_tokens, requested)
        return ms / 1000


@dataclass(frozen=True)
class AdmissionContext:
    """What a pool's policy may use."""

    pool: str
    ttft_s: float  # the pool's TTFT target
    on_mode: Callable[[str, str | None], None] = lambda pool, mode: None  # an adaptive policy's mode changed
    clock: Clock = field(default=time.monotonic)


class Admission(ABC):
    needs: ClassVar[frozenset[Need]] = frozenset()
    # Whether `admitted` is called for every request it lets go (costs a call on the data path).
    observes: ClassVar[bool] = False

    @classmethod
    def build(cls, context: AdmissionContext) -> Admission:
        """The policy of one pool (stateless policies ignore the context)."""
        return cls()

    @abstractmethod
    def key(self, ticket: Ticket) -> float:
        """Lower goes first; equal keys in arrival order. Fixed once a request waits (a heap holds
        it), unless `admitted` says the order changed."""

    def full(self, waiting: int, max_queue: int) -> bool:
        """Whether a newcomer is refused (429) rather than queued behind `waiting` others."""
        return waiting >= max_queue

    def admitted(self, ticket: Ticket, now: float) -> bool:
        """A request's wait is over (at once, or after queueing). True: the order of the waiters
        changed, so the queue takes their keys again."""
        return False

    @property
    def mode(self) -> str | None:
        """The ordering in force, for a policy that switches among several (None: it does not)."""
        return None
