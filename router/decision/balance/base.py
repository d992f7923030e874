"""The balance policy interface (llm-d's scorer and picker, after the filters have run)."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import StrEnum
from typing import ClassVar

from tandem.router.decision import pickers, scorers
from tandem.router.decision.snapshot import EndpointSnapshot, RequestFacts

Rng = random.Random | None


class Fact(StrEnum):
    """Request facts that cost something to compute: the dispatcher computes those the pool's
    policies ask for (`needs`), and leaves the others None in `RequestFacts`."""

    SESSION_KEY = "session_key"  # the session header, else the body's `user`
    PREFIX_KEY = "prefix_key"  # a hash of the prompt's beginning


class Balance(ABC):
    needs: ClassVar[frozenset[Fact]] = frozenset()

    @abstractmethod
    def pick(
        self, candidates: Sequence[EndpointSnapshot], facts: RequestFacts, turn: int, rng: Rng
    ) -> EndpointSnapshot:
        """One of the candidates (non-empty, eligible); `turn` rotates ties, `rng` draws."""


def least_loaded(candidates: Sequence[EndpointSnapshot], turn: int) -> EndpointSnapshot:
    """The fewest open requests, ties rotating: the default, and what keyed policies do without a key."""
    return pickers.highest(candidates, scorers.least_load, turn)
