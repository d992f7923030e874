"""Handoff tags leased per decoder (router/connectors/tag_lease.py): the lowest index no handoff in
flight to the decoder holds; back for the next handoff once its KV cannot be on its way any more,
retired otherwise."""

from __future__ import annotations

import pytest

from tandem.router.connectors.tag_lease import KV_TAG, TagLeases, new_namespace

A, B = "http://10.0.0.1:8000", "http://10.0.0.2:8000"


def test_sequential_handoffs_to_a_decoder_share_its_first_tag() -> None:
    leases = TagLeases("ns")
    first = leases.take(A)
    assert first.params == {KV_TAG: "ns.h0"}
    first.end(settled=True)
    assert leases.take(A).value == "ns.h0"


def test_handoffs_in_flight_to_one_decoder_hold_different_tags() -> None:
    leases = TagLeases("ns")
    held = [leases.take(A) for _ in range(3)]
    assert [lease.index for lease in held] == [0, 1, 2]
    assert leases.held(A) == 3


def test_other_decoders_lease_the_same_tags() -> None:
    """The tags are shared across decoders, so one prefiller's tier serves handoffs to any of them."""
    leases = TagLeases("ns")
    assert (leases.take(A).value, leases.take(B).value) == ("ns.h0", "ns.h0")


def test_the_lowest_free_index_comes_first() -> None:
    leases = TagLeases("ns")
    held = [leases.take(A) for _ in range(4)]
    held[2].end(settled=True)
    held[1].end(settled=True)
    assert [leases.take(A).index for _ in range(3)] == [1, 2, 4]


def test_an_index_whose_kv_may_still_be_on_its_way_is_never_leased_again() -> None:
    leases = TagLeases("ns")
    first, second = leases.take(A), leases.take(A)
    first.end(settled=False)
    second.end(settled=True)
    assert [leases.take(A).index for _ in range(2)] == [1, 2]
    assert leases.take(B).index == 0  # another decoder's buffer: unaffected


def test_a_decoder_with_a_retired_index_is_remembered_when_nothing_is_held() -> None:
    leases = TagLeases("ns")
    leases.take(A).end(settled=False)
    assert leases.held(A) == 0
    assert leases.take(A).index == 1


def test_ending_a_lease_twice_counts_once() -> None:
    leases = TagLeases("ns")
    first, second = leases.take(A), leases.take(A)
    first.end(settled=True)
    first.end(settled=False)  # the handoff's read, then its finish
    assert leases.held(A) == 1
    assert leases.take(A).index == 0  # not retired by the second call
    second.end(settled=True)


@pytest.mark.parametrize("namespace", ["", "a@b", "a%b"])
def test_a_namespace_lmcache_cannot_key_by_is_refused(namespace: str) -> None:
    """LMCache's key string separates its fields with '@' and a tag from its value with '%'."""
    with pytest.raises(ValueError, match="namespace"):
        TagLeases(namespace)


def test_each_process_draws_a_namespace_of_its_own() -> None:
    first, second = new_namespace(), new_namespace()
    assert first != second and len(first) == 16
    TagLeases(first)
