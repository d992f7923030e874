"""The decoders' PD buffers replayed over a twin run (sim/twin_pd_buffer.py)."""

from __future__ import annotations

from tandem.api import DisaggregationMode, KvConnector
from tandem.planner import plan
from tandem.planner.catalog import load_catalog
from tandem.planner.kv_cache import pd_buffer_chunks
from tandem.planner.planner import resolve_model
from tandem.sim.twin import REFERENCE_WORKLOADS, Arrival, EngineRun, Served, measure
from tandem.sim.twin_pd_buffer import replay


def leg(origin: float, read: float, prompt: int) -> Served:
    return Served(Arrival(origin + 0.1, prompt, 10, kv_tokens=prompt, origin=origin), first_token=read)


def test_a_handoff_holds_its_chunks_from_admission_to_the_read() -> None:
    run = EngineRun([leg(0.0, 1.0, 512), leg(0.5, 2.0, 512), leg(1.0, 3.0, 256), leg(1.5, 4.0, 512)], [])
    replayed = replay([run], capacity_chunks=4, chunk_tokens=256)
    # 2 + 2 fill it; the third arrives as the first is read; the fourth finds 3 held.
    assert (replayed.handoffs, replayed.short, replayed.peak_chunks) == (4, 1, 4)


def test_local_prefills_hold_nothing() -> None:
    local = Served(Arrival(0.0, 4000, 10), first_token=5.0)
    assert replay([EngineRun([local], [])], 1, 256).handoffs == 0


def test_the_planned_buffer_takes_the_rag_plans_handoffs_where_two_gib_refused_one_in_nine() -> None:
    """The devcluster twin found 11 % of rag-8b's requests refused with a 2 GiB buffer; the planned
    size leaves a few in ten thousand short (LMCache's buffer is finite and arrivals Poisson)."""
    workload = {w.name: w for w in REFERENCE_WORKLOADS}["rag-8b"]
    request = workload.request(DisaggregationMode.ALWAYS).model_copy(
        update={"connector": KvConnector.LMCACHE}
    )
    planned = plan(request)
    assert planned.decode is not None and planned.decode.pd_buffer_bytes is not None
    model = resolve_model(request, load_catalog())
    runs = measure(request, planned, seconds=workload.seconds).runs["decode"]
    default = replay(runs, pd_buffer_chunks(model, 1, 256, 2 * 1024**3), 256)
    sized = replay(runs, pd_buffer_chunks(model, 1, 256, planned.decode.pd_buffer_bytes), 256)
    assert default.short_share > 0.08
    assert sized.short_share < 0.002
