"""Continuous batching, as vLLM's V1 scheduler does it, without time or I/O (the engine adds both).

Every step has a token budget (``max_num_batched_tokens``). Running sequences come first, in
admission order: a decoding sequence takes one token, a sequence still prefilling takes as much of
its prompt as the budget allows (chunked prefill). What is left admits waiting sequences, first come
first served, while fewer than ``max_num_seqs`` run and their KV blocks fit.

KV memory is ``kv_capacity_tokens`` in blocks of ``block_size`` tokens. When a running sequence
needs a block and none is free, the most recently admitted sequence is preempted (recompute mode:
its blocks are freed and it goes back to the head of the queue); no sequence is admitted in a step
that preempted. Blocks of a finished sequence can be *held* for a remote reader (NIXL) until
released.

Prefix caching: the content of free blocks stays addressable by the hash of the prompt prefix they
hold, until the block is reused (LRU). A sequence admitted with a matching prefix skips computing
those blocks. KV loaded from another engine (an LMCache hit, a NIXL read) is skipped the same way.
At least one prompt token is always computed, to sample from.

Step cost (``EngineTiming``, milliseconds): a step with prefill work costs ``prefill_base_ms +
prefill_ms_per_token * T + prefill_ms_per_token_sq * Σ((start+n)² - start²)`` over its prefill
chunks (so a whole prompt of length L adds L²), plus, when it decodes B sequences holding C context
tokens, ``decode_step_base_ms + decode_ms_per_seq * B + decode_ms_per_kilotoken * C / 1000``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from tandem.api.timing import EngineTiming


@dataclass(eq=False)
class Sequence:
    """One request inside the engine: how far its KV is computed and how much memory it holds."""

    request_id: str
    prompt_len: int
    block_hashes: tuple[int, ...] = ()  # prefix-cache keys of the prompt's full blocks
    external_tokens: int = 0  # prompt tokens whose KV another engine provides, used at first admission
    num_generated: int = 0
    num_computed: int = 0
    num_blocks: int = 0
    finished: bool = False

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_generated


@dataclass(frozen=True)
class Chunk:
    """Tokens ``start .. start+num_tokens`` of one sequence, computed in one step."""

    seq: Sequence
    start: int
    num_tokens: int
    decode: bool


@dataclass(frozen=True)
class StepPlan:
    chunks: tuple[Chunk, ...] = ()
    admitted: tuple[Sequence, ...] = ()
    preempted: tuple[Sequence, ...] = ()
    prefix_query_tokens: int = 0
    prefix_hit_tokens: int = 0


def step_ms(plan: StepPlan, timing: EngineTiming) -> float:
    prefill = [c for c in plan.chunks if not c.decode]
    decode = [c for c in plan.chunks if c.decode]
    ms = 0.0
    if prefill:
        tokens = sum(c.num_tokens for c in prefill)
        squares = sum((c.start + c.num_tokens) ** 2 - c.start**2 for c in prefill)
        ms += timing.prefill_base_ms + timing.prefill_ms_per_token * tokens
        ms += timing.prefill_ms_per_token_sq * squares
    if decode:
        context = sum(c.start + 1 for c in decode)
        ms += timing.decode_step_base_ms + timing.decode_ms_per_seq * len(decode)
        ms += timing.decode_ms_per_kilotoken * context / 1000
    return ms


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

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> StepPlan:
        budget = self.timing.max_num_batched_tokens
        chunks: list[Chunk] = []
        preempted: list[Sequence] = []
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            count = min(seq.num_tokens - seq.num_computed, budget)
            need = self.blocks_for(seq.num_computed + count) - seq.num_blocks
            while need > self.free_blocks and self.running[-1] is not seq:
                preempted.append(self._preempt(self.running.pop()))
            if need > self.free_blocks:
                preempted.append(self._preempt(self.running.pop()))
                break
            self._allocate(seq, need)
            chunks.append(self._chunk(seq, count))
            budget -= count
            index += 1
        if preempted:
            return StepPlan(tuple(chunks), (), tuple(preempted))
        return self._admit(chunks, budget)

    def _admit(self, chunks: list[Chunk], budget: int) -> StepPlan:
        admitted: list[Sequence] = []
        queries = hits = 0
        while self.waiting and budget > 0 and len(self.running) < self.timing.max_num_seqs:
            seq = self.waiting[0]
            hit_blocks = self._cache.match(seq.block_hashes) if self._cache is not None else 0
            cached = min(max(hit_blocks * self.block_size, seq.external_tokens), seq.num_tokens - 1)
            count = min(seq.num_tokens - cached, budget)
            need = self.blocks_for(cached + count)
            if need > self.free_blocks:
                break
            self.waiting.popleft()
            if self._cache is not None:
                self._cache.take(seq.block_hashes[:hit_blocks])
                queries += seq.prompt_len
                hits += min(hit_blocks * self.block_size, cached)
            seq.external_tokens = 0
            seq.num_computed = cached
            self._allocate(seq, need)
            self.running.append(seq)
            admitted.append(seq)
            chunks.append(self._chunk(seq, count))
            budget -= count
        return StepPlan(tuple(chunks), tuple(admitted), (), queries, hits)

    def complete(self, plan: StepPlan) -> list[Sequence]:
        """Account the step's computed tokens; the sequences that now sample a token, in order."""
        sampled = []
        for chunk in plan.chunks:
            seq = chunk.seq
            if seq.finished or chunk.start != seq.num_computed:
                continue  # aborted or preempted while the step ran
            seq.num_computed += chunk.num_tokens
            if seq.num_computed == seq.num_tokens:
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
