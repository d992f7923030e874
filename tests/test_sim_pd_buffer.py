"""LMCache PD bookkeeping: chunk keys (per prefix, seed, rank and TP size) and the decoder's buffer
(all-or-nothing allocation, writing → ready, freed on read)."""

from __future__ import annotations

from tandem.sim.pd_buffer import PDBuffer, chunk_keys

SEED = (0).to_bytes(8, "little")


def test_chunk_keys_chain_over_the_prefix_and_keep_the_partial_chunk() -> None:
    tokens = list(range(600))
    keys = chunk_keys(tokens, 256, SEED, discard_partial=False)
    assert keys.lengths == (256, 256, 88)
    assert chunk_keys(tokens[:512], 256, SEED, discard_partial=False).hashes == keys.hashes[:2]
    changed = chunk_keys([1, *tokens[1:]], 256, SEED, discard_partial=False)
    assert all(a != b for a, b in zip(changed.hashes, keys.hashes, strict=True))  # chained
    assert chunk_keys(tokens, 256, SEED, discard_partial=True).lengths == (256, 256)


def test_chunk_keys_differ_with_the_hash_seed_rank_and_tp_size() -> None:
    keys = chunk_keys(list(range(10)), 256, SEED, discard_partial=False)
    other = chunk_keys(list(range(10)), 256, (1).to_bytes(8, "little"), discard_partial=False)
    assert keys.hashes != other.hashes
    assert keys.for_rank("m", 2, 0) != keys.for_rank("m", 2, 1) != keys.for_rank("m", 4, 1)
    assert keys.for_rank("m", 2, 0)[0].startswith("vllm@m@2@0@")


def test_the_buffer_allocates_all_or_nothing_and_frees_on_release() -> None:
    buffer = PDBuffer(capacity=3)
    assert buffer.allocate(["a", "b"], "r1") is not None
    assert buffer.allocate(["c", "d"], "r2") is None
    assert buffer.free == 1 and buffer.state("c") == "absent"
    assert buffer.state("a") == "writing"
    assert buffer.mark_written(["a", "b", "gone"]) == 2
    assert buffer.state("a") == "ready"
    buffer.release(["a", "b"])
    assert buffer.free == 3 and buffer.state("a") == "absent"


def test_reallocating_a_key_rewrites_it() -> None:
    buffer = PDBuffer(capacity=2)
    buffer.allocate(["a"], "r1")
    buffer.mark_written(["a"])
    assert buffer.allocate(["a"], "r2") is not None
    assert buffer.state("a") == "writing" and buffer.free == 1
