"""LMCache PD bookkeeping against LMCache 0.5.6's own rules: the chunk key string, a decoder buffer
that never evicts and frees a chunk only at its last reference, reservations, and which chunks a
decode leg reads (hence frees)."""

from __future__ import annotations

import pytest

from tandem.sim.pd_buffer import PDBuffer, chunk_keys, plan_retrieval, total_chunks

SEED = (0).to_bytes(8, "little")
# LMCache's TORCH_DTYPE_TO_STR_DTYPE values (lmcache/utils.py 366-378).
LMCACHE_DTYPES = {"half", "bfloat16", "float", "double", "int8", "uint8", "int16", "int32", "int64"}


def parse_key(key: str) -> tuple[str, int, int, int, str]:
    """``CacheEngineKey.from_string`` (lmcache/utils.py 508-526): five fields, hex hash."""
    parts = key.split("@")
    assert len(parts) == 5, key
    assert parts[4] in LMCACHE_DTYPES, key
    return parts[0], int(parts[1]), int(parts[2]), int(parts[3], 16), parts[4]


def test_chunk_keys_chain_over_the_prefix_and_keep_the_partial_chunk() -> None:
    tokens = list(range(600))
    keys = chunk_keys(tokens, 256, SEED, discard_partial=False)
    assert keys.lengths == (256, 256, 88)
    assert chunk_keys(tokens[:512], 256, SEED, discard_partial=False).hashes == keys.hashes[:2]
    changed = chunk_keys([1, *tokens[1:]], 256, SEED, discard_partial=False)
    assert all(a != b for a, b in zip(changed.hashes, keys.hashes, strict=True))  # chained
    assert chunk_keys(tokens, 256, SEED, discard_partial=True).lengths == (256, 256)


def test_keys_are_lmcache_cache_engine_key_strings_per_model_world_size_and_worker() -> None:
    keys = chunk_keys(list(range(10)), 256, SEED, discard_partial=False)
    other_seed = chunk_keys(list(range(10)), 256, (1).to_bytes(8, "little"), discard_partial=False)
    assert keys.hashes != other_seed.hashes
    key = keys.for_rank("meta-llama/Llama-3.1-8B", 2, 1, "bfloat16")[0]
    assert parse_key(key) == ("meta-llama/Llama-3.1-8B", 2, 1, keys.hashes[0], "bfloat16")
    assert f"{keys.hashes[0]:x}" in key and not key.startswith("vllm@")
    ranks = {keys.for_rank("m", 2, 0, "bfloat16")[0], keys.for_rank("m", 2, 1, "bfloat16")[0]}
    assert len(ranks | {keys.for_rank("m", 4, 1, "bfloat16")[0]}) == 3


def test_total_chunks_rounds_up_even_when_partial_chunks_are_discarded() -> None:
    """vllm_v1_adapter.py 413-417: ceil(prompt_len / chunk_size)."""
    assert [total_chunks(n, 256) for n in (1, 256, 257, 600)] == [1, 1, 2, 3]


def test_a_full_buffer_allocates_nothing_and_never_evicts() -> None:
    buffer = PDBuffer(capacity=2)
    assert buffer.allocate("a") is not None and buffer.allocate("b") is not None
    assert buffer.allocate("c") is None
    assert (buffer.state("a"), buffer.state("b"), buffer.state("c")) == ("writing", "writing", "absent")
    assert buffer.mark_written(["a", "gone"]) == 1 and buffer.state("a") == "ready"


def test_a_pinned_chunk_is_freed_only_by_its_last_reference() -> None:
    """contains(key, pin=True) adds a reference (pd_backend_async.py 638-654); remove() drops one
    and frees the chunk at zero (1514-1535)."""
    buffer = PDBuffer(capacity=2)
    buffer.allocate("a")
    assert buffer.pin("a") and not buffer.pin("b")
    assert buffer.remove("a") is False and buffer.state("a") == "writing" and buffer.free == 1
    assert buffer.remove("a") is True and buffer.state("a") == "absent" and buffer.free == 2
    assert buffer.remove("a") is False


def test_a_key_put_meanwhile_drops_the_new_slot() -> None:
    """put() keeps the first object of a key and drops a duplicate (pd_backend_async.py 1479-1493)."""
    buffer = PDBuffer(capacity=2)
    first = buffer.allocate("a")
    second = buffer.allocate("a")
    assert first != second and buffer.free == 1 and buffer.used == 1


def test_reservations_admit_only_what_is_unreserved() -> None:
    buffer = PDBuffer(capacity=4)
    assert buffer.reserve("r1", 3) and not buffer.reserve("r2", 2)
    buffer.release_reservation("r1")
    assert buffer.reserve("r2", 4) and buffer.reserved == 4


def test_fault_held_chunks_take_free_slots_and_give_them_back() -> None:
    buffer = PDBuffer(capacity=3)
    buffer.allocate("a")
    buffer.hold_for_fault(5)
    assert (buffer.fault_held, buffer.free) == (2, 0)
    buffer.hold_for_fault(0)
    assert (buffer.fault_held, buffer.free) == (0, 2)


@pytest.mark.parametrize(
    ("hit", "local_cached", "num_tokens", "read", "loaded"),
    [
        (3, 0, 601, range(0, 3), 600),  # a decode leg with nothing cached reads every hit chunk
        (3, 256, 601, range(1, 3), 600),  # vLLM's prefix cache covers chunk 0: it is never read
        (3, 300, 601, range(1, 3), 600),  # masking rounds down to a whole chunk (818-823)
        (1, 0, 601, range(0, 1), 256),  # a partial hit reads what it hit
        (3, 592, 601, range(2, 3), 600),  # the local cache covers all but 8 tokens: chunk 2 is read
        (3, 600, 601, range(3, 3), 0),  # ... or nothing: no load at all (1527), nothing is freed
        (3, 599, 600, range(3, 3), 0),  # a full-prompt hit loads one token less (1454-1455)
        (0, 0, 601, range(0, 0), 0),
    ],
)
def test_a_decode_leg_reads_only_the_hit_chunks_beyond_vllms_own_prefix_cache(
    hit: int, local_cached: int, num_tokens: int, read: range, loaded: int
) -> None:
    retrieval = plan_retrieval((256, 256, 88), hit, local_cached, num_tokens, 256)
    assert (retrieval.read, retrieval.loaded_tokens) == (read, loaded)
