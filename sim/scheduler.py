"""Continuous batching, as vLLM's V1 scheduler does it, without time or I/O (the engine adds both).

Every step has a token budget (``max_num_batched_tokens``). Running sequences come first, in
admission order: a decoding sequence takes one token, a sequence still prefilling takes as much of
its prompt as the budget allows (chunked prefill). What is left admits waiting sequences, first come
first served, while fewer than ``max_num_seqs`` run and the KV blocks of the whole sequence fit
(vLLM's ``scheduler_reserve_full_isl``, on by default). docs/simulator.md lists each rule with the
line of vLLM's scheduler that it follows.

KV memory is ``kv_capacity_tokens`` in blocks of ``block_size`` tokens. When a running sequence
needs a block and none is free, the most recently admitted sequence is preempted (recompute mode:
its blocks are freed and it goes back to the head of the queue); no sequence is admitted in a step
that preempted. Blocks of a finished sequence can be *held* for a remote reader (NIXL) until
released.

Prefix caching: the content of free blocks stays addressable by the hash of the prompt prefix they
hold, until the block is reused (LRU). A sequence admitted with a matching prefix skips computing
those blocks. KV loaded from another engine (an LMCache hit, a NIXL read) is skipped the same way.
At least one prompt token is always computed, to sample from.

Step cost (``EngineTiming``, milliseconds): one forward pass over all the step's tokens, so the
longer of ``decode_step_base_ms + decode_ms_per_seq * B + decode_ms_per_kilotoken * C / 1000`` for
its B decoding sequences holding C context tokens, and ``prefill_base_ms + prefill_ms_per_token *
(T + B) + prefill_ms_per_token_sq * Σ((start+n)² - start²)`` for its prefill chunks of T tokens in
all (a whole prompt of length L adds L²), plus an MoE model's routed experts over the step's
T + B tokens (``EngineTiming.moe_ms``); see :func:`step_ms`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from tandem.api.timing import EngineTiming


@dataclass(eq=False, slots=True)
class Sequence:
    """One request inside the engine: how far its KV is computed and how much memory it holds."""

    request_id: str
    prompt_len: int
    block_hashes: tuple[int, ...] = ()  # prefix-cache keys of the prompt's full blocks
    external_tokens: int = 0  # prompt tokens whose KV another engine provides, used at first admission
    external_load_ms: float = 0.0  # per token of them beyond the local hit, loaded in the admitting step
    num_generated: int = 0
    num_computed: int = 0
    num_blocks: int = 0
    finished: bool = False
    arrival: float = 0.0  # seconds, on the clock of whoever drives the engine (vLLM's arrival_time)
    last_token_at: float = 0.0  # when it last sampled a token

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_generated


class Chunk(NamedTuple):
    """Tokens ``start .. start+num_tokens`` of one sequence, computed in one step."""

    seq: Sequence
    start: int
    num_tokens: int
    decode: bool


# ``Chunk(seq, start, num_tokens, decode)`` without the Python frame of a named tuple's ``__new__``.
_chunk = partial(tuple.__new__, Chunk)


@dataclass(frozen=True)
class StepPlan:
    chunks: tuple[Chunk, ...] = ()
    admitted: tuple[Sequence, ...] = ()
    preempted: tuple[Sequence, ...] = ()
    prefix_query_tokens: int = 0
    prefix_hit_tokens: int = 0
    external_query_tokens: int = 0  # what the KV connector was asked for: prompt past the local hit
    external_hit_tokens: int = 0  # what it provided
    load_ms: float = 0.0  # loading the connector's KV (an LMCache tier's), before the forward pass


def step_ms(plan: StepPlan, timing: EngineTiming) -> float:
    """How long one step takes: one forward pass over all its tokens.

    vLLM V1 has no prefill or decode phase (vllm/v1/core/sched/scheduler.py:700-710): a step's
    decodes and prefill chunks are one batch of ``total_num_scheduled_tokens`` that the model runs
    once (vllm/v1/worker/gpu_model_runner.py:1937, 4173). The weights are read once and every token
    passes the linear layers, so the step takes the longer of its two bounds: the decode batch's
    (``decode_*``: weights and KV read) and the compute of all its tokens (``prefill_*`` over the
    prompt chunks, each decoding sequence one more token). A step of decodes alone, or of prefill
    alone, is that one term. KV a connector loads (an LMCache CPU tier's, ``load_ms``) comes first:
    LMCache retrieves it into the paged cache before the model runs (``start_load_kv``).
    """
    tokens = squares = decodes = context = 0
    for chunk in plan.chunks:
        if chunk.decode:
            decodes += 1
            context += chunk.start + 1
        else:
            tokens += chunk.num_tokens
            squares += (chunk.start + chunk.num_tokens) ** 2 - chunk.start**2
    decode_ms = prefill_ms = 0.0
    if decodes:
        decode_ms = (
            timing.decode_step_base_ms
            + timing.decode_ms_per_seq * decodes
            + timing.decode_ms_per_kilotoken * context / 1000
        )
    if tokens:
        prefill_ms = (
            timing.prefill_base_ms
            + timing.prefill_ms_per_token * (tokens + decodes)
            + timing.prefill_ms_per_token_sq * squares
        )
    # An MoE model's routed experts run once over every token of the step (tandem.planner.cost,
    # ReplicaCost.step_ms and prefill_ms: experts_ms(batch + chunk)).
    return max(decode_ms, prefill_ms) + timing.moe_ms(tokens + decodes) + plan.load_ms


class PrefixCache:
    """Hashes of prompt-prefix blocks whose content still sits in free blocks, least recent first."""

    def __init__(self) -> None:
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, hashes: Seq[int]) -> int:
        """How many leading blocks of ``hashes`` are cached."""
        count = 0
        for block in hashes:
            if block not in self._blocks:
                break
            count += 1
        return count

    def take(self, hashes: Seq[int]) -> None:
        """The blocks are in use again: no longer free, so no longer in the cache."""
        for block in hashes:
            self._blocks.pop(block, None)

    def put(self, hashes: Seq[int]) -> None:
        for block in hashes:
            self._blocks[block] = None
            self._blocks.move_to_end(block)

    def trim(self, limit: int) -> None:
        while len(self._blocks) > limit:
            self._blocks.popitem(last=False)


@dataclass
class _Held:
    blocks: int
    hashes: tuple[int, ...]


@dataclass
class Scheduler:
    timing: EngineTiming
    block_size: int = 16
    prefix_caching: bool = True
    waiting: deque[Sequence] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.total_blocks = self.timing.kv_capacity_tokens // self.block_size
        self.free_blocks = self.total_blocks
        self._cache = PrefixCache() if self.prefix_caching else None
        self._held: dict[str, _Held] = {}

    @property
    def kv_usage(self) -> float:
        return 1 - self.free_blocks / self.total_blocks

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def cached_prefix_tokens(self, block_hashes: Seq[int], num_tokens: int) -> int:
        """The prefix-cache hit a new request would get now, in whole blocks and short of its last
        token (vLLM's ``get_computed_blocks``, which a KV connector is told as ``num_computed_tokens``)."""
        if self._cache is None:
            return 0
        return min(self._cache.match(block_hashes), (num_tokens - 1) // self.block_size) * self.block_size

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> StepPlan:
        budget = self.timing.max_num_batched_tokens
        chunks: list[Chunk] = []
        preempted: list[Sequence] = []
        index = 0
        running, size = self.running, self.block_size
        # The hot loop of the twin (one pass per token generated): written out, not factored.
        while index < len(running) and budget > 0:
            seq = running[index]
            computed, tokens = seq.num_computed, seq.prompt_len + seq.num_generated
            count = tokens - computed
            if count > budget:
                count = budget
            need = -(-(computed + count) // size) - seq.num_blocks
            if need > 0:  # most decode steps stay within the last block: nothing to allocate
                while need > self.free_blocks and running[-1] is not seq:
                    preempted.append(self._preempt(running.pop()))
                if need > self.free_blocks:
                    preempted.append(self._preempt(running.pop()))
                    break
                self._allocate(seq, need)
            decode = count == 1 and seq.num_generated > 0 and computed == tokens - 1
            chunks.append(_chunk((seq, computed, count, decode)))
            budget -= count
            index += 1
        if preempted:
            return StepPlan(tuple(chunks), (), tuple(preempted))
        return self._admit(chunks, budget)

    def _admit(self, chunks: list[Chunk], budget: int) -> StepPlan:
        admitted: list[Sequence] = []
        queries = hits = external_queries = external_hits = 0
        load_ms = 0.0
        while self.waiting and budget > 0 and len(self.running) < self.timing.max_num_seqs:
            seq = self.waiting[0]
            hit_blocks = self._cache.match(seq.block_hashes) if self._cache is not None else 0
            local = min(hit_blocks * self.block_size, seq.num_tokens - 1)
            cached = min(max(local, seq.external_tokens), seq.num_tokens - 1)
            count = min(seq.num_tokens - cached, budget)
            if self.blocks_for(seq.num_tokens) > self.free_blocks:
                break  # the whole sequence must fit, not only its first chunk
            need = self.blocks_for(cached + count)
            self.waiting.popleft()
            if self._cache is not None:
                self._cache.take(seq.block_hashes[:hit_blocks])
                queries += seq.prompt_len
                hits += min(hit_blocks * self.block_size, cached)
            # vLLM's connector counters (v1/core/sched/scheduler.py 1211-1214): queried past the
            # local hit, hit what the connector loads.
            external_queries += seq.num_tokens - local
            external_hits += cached - local
            load_ms += (cached - local) * seq.external_load_ms
            seq.external_tokens = 0
            seq.num_computed = cached
            self._allocate(seq, need)
            self.running.append(seq)
            admitted.append(seq)
            chunks.append(self._chunk(seq, count))
            budget -= count
        return StepPlan(
            tuple(chunks), tuple(admitted), (), queries, hits, external_queries, external_hits, load_ms
        )

    def complete(self, plan: StepPlan) -> list[Sequence]:
        """Account the step's computed tokens; the sequences that now sample a token, in order."""
        sampled = []
        for seq, start, count, _ in plan.chunks:
            if seq.finished or start != seq.num_computed:
                continue  # aborted or preempted while the step ran
            seq.num_computed = start + count
            if start + count == seq.prompt_len + seq.num_generated:
                sampled.append(seq)
        return sampled

    def finish(self, seq: Sequence, *, hold: bool = False) -> None:
        """Take ``seq`` out; its blocks are freed, or held for a remote reader when ``hold``."""
        seq.finished = True
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        if hold:
            self._held[seq.request_id] = _Held(seq.num_blocks, self._computed_blocks(seq))
        else:
            self._free(seq.num_blocks, self._computed_blocks(seq))
        seq.num_blocks = 0

    def release(self, request_id: str) -> bool:
        """Free the blocks held for ``request_id``; False when none were held."""
        held = self._held.pop(request_id, None)
        if held is None:
            return False
        self._free(held.blocks, held.hashes)
        return True

    def _chunk(self, seq: Sequence, count: int) -> Chunk:
        decode = count == 1 and seq.num_generated > 0 and seq.num_computed == seq.num_tokens - 1
        return Chunk(seq, seq.num_computed, count, decode)

    def _allocate(self, seq: Sequence, blocks: int) -> None:
        seq.num_blocks += blocks
        self.free_blocks -= blocks
        if self._cache is not None:
            self._cache.trim(self.free_blocks)

    def _computed_blocks(self, seq: Sequence) -> tuple[int, ...]:
        return seq.block_hashes[: min(seq.num_computed, seq.prompt_len) // self.block_size]

    def _free(self, blocks: int, hashes: tuple[int, ...]) -> None:
        self.free_blocks += blocks
        if self._cache is not None:
            self._cache.put(hashes)
            self._cache.trim(self.free_blocks)

    def _preempt(self, seq: Sequence) -> Sequence:
        self._free(seq.num_blocks, self._computed_blocks(seq))
        seq.num_blocks = 0
        seq.num_computed = 0
        self.waiting.appendleft(seq)
        return seq
