"""The engine core: one engine's step loop, on whatever clock drives it.

vLLM's ``EngineCore.step`` (vllm/v1/engine/core.py:667-697) schedules a batch, runs the model on it
and hands the sampled tokens back to the scheduler. :class:`EngineCore` does the same without a GPU:
:meth:`~EngineCore.begin` schedules a step (:class:`~tandem.sim.scheduler.Scheduler`) and says when
it ends (its ``EngineTiming`` cost, divided by the speed); :meth:`~EngineCore.end` accounts the
step's tokens. The HTTP simulator's asyncio engine (:mod:`tandem.sim.engine`) drives it on the event
loop's clock, the twin (:mod:`tandem.sim.twin`) on a virtual one: both run this scheduler and this
step timing, and nothing else decides either.

Latencies are those vLLM's metrics observe (vllm/v1/metrics/stats.py:509-558): the first token's
since the request arrived (TTFT), every later token's since the token before it (ITL), each taken
when the step that sampled it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from tandem.api.timing import EngineTiming
from tandem.sim.scheduler import Scheduler, Sequence, StepPlan, step_ms


@dataclass(frozen=True)
class Step:
    plan: StepPlan
    end: float  # when the step completes, on the driver's clock (seconds)

    @property
    def idle(self) -> bool:
        """Nothing to run: no sequence was scheduled."""
        return not self.plan.chunks


class Sampled(NamedTuple):
    """A sequence sampled its next token at the end of a step."""

    seq: Sequence
    latency: float  # seconds: since arrival for the first token, since the previous one after it

    @property
    def first(self) -> bool:
        return self.seq.num_generated == 1


# ``Sampled(seq, latency)`` without the Python frame of a named tuple's ``__new__``.
_sampled = partial(tuple.__new__, Sampled)


class EngineCore:
    """The scheduler and the step clock of one engine."""

    def __init__(
        self, timing: EngineTiming, *, block_size: int = 16, prefix_caching: bool = True, speed: float = 1.0
    ) -> None:
        self.timing = timing
        self.speed = speed
        self.scheduler = Scheduler(timing, block_size, prefix_caching)
        self._busy_until: float | None = None  # end of the last step while steps follow each other

    def add(self, seq: Sequence, now: float) -> None:
        """Queue ``seq``; ``now`` is its arrival, from which its time to first token counts."""
        seq.arrival = now
        self.scheduler.add(seq)

    def begin(self, now: float) -> Step:
        """Schedule the next step at ``now``.

        A step ends one step duration after the previous one ended, so a driver's own work between
        steps is hidden in the step, as a GPU step hides the scheduler's CPU time; a driver that
        falls behind starts from ``now`` rather than owing time (no burst of short steps).
        """
        plan = self.scheduler.schedule()
        if not plan.chunks:
            if not plan.preempted:
                self._busy_until = None
            return Step(plan, now)
        start = now if self._busy_until is None else self._busy_until
        end = max(start + step_ms(plan, self.timing) / 1000 / self.speed, now)
        self._busy_until = end
        return Step(plan, end)

    def end(self, step: Step, now: float) -> list[Sampled]:
        """Account ``step``, ended at ``now``: the sequences that sampled a token, in batch order."""
        sampled = []
        for seq in self.scheduler.complete(step.plan):  # once per token generated: written out
            since = seq.last_token_at if seq.num_generated else seq.arrival
            seq.num_generated += 1
            seq.last_token_at = now
            sampled.append(_sampled((seq, now - since)))
        return sampled
