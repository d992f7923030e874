"""How the cluster twin (benchmarks/twin/) reads its runs: the load step's recovery and scale-down,
a probe's bounded queues, and when a pod counts as starved of CPU. Pure functions on made-up runs."""

from __future__ import annotations

import sys
from pathlib import Path

from paths import REPO

sys.path.insert(0, str(REPO / "benchmarks" / "twin"))

from cluster_load import waiting_at
from cpu_share import Share
from load_step import desired_at, recovered_after, settled_after

from tandem.load.records import RequestRecord
from tandem.load.replicas import ReplicaSample
from tandem.load.stats import Window


def attainment(*shares: float | None) -> list[Window]:
    return [Window(5.0 * i, 5.0, 0, 0, 0, None, None, share) for i, share in enumerate(shares)]


def test_recovery_counts_from_the_step_to_the_last_stretch_that_holds_90_percent() -> None:
    series = attainment(1, 1, 0.2, 0.95, 0.3, None, 0.95, 1, 0.4)
    # The step runs from 10 s to 40 s: it holds from the window at 25 s (empty windows do not break it).
    assert recovered_after(series, 10.0, 40.0) == 15.0
    assert recovered_after(series, 10.0, 45.0) is None  # the step's last window missed
    assert recovered_after(attainment(1, 1, 1), 5.0, 15.0) == 0.0


def test_scale_down_is_when_the_desired_replicas_settled_after_the_step() -> None:
    samples = [
        ReplicaSample(t, "decode", desired, desired)
        for t, desired in [(0, 1), (40, 3), (150, 5), (180, 5), (185, 2), (190, 2)]
    ]
    samples.append(ReplicaSample(0, "router", 1, 1))
    assert desired_at(samples, 45) == {"decode": 3}
    assert settled_after(samples, ["decode"], 150.0) == 35.0
    assert settled_after(samples, ["decode"], 186.0) == 0.0


def test_queues_are_the_requests_still_waiting_for_their_first_token() -> None:
    records = [
        RequestRecord(0, 0.0, 10, 10, sent_s=0.0, ttft_s=0.5),  # first token at 0.5 s
        RequestRecord(1, 0.8, 10, 10, sent_s=0.8, ttft_s=0.5),  # waiting at 1 s
        RequestRecord(2, 0.9, 10, 10, sent_s=0.9),  # never got one
        RequestRecord(3, 1.5, 10, 10, sent_s=1.5, ttft_s=0.1),  # not sent yet at 1 s
    ]
    assert waiting_at(records, 1.0) == 2


def test_a_pod_that_waits_for_a_cpu_or_fills_its_core_is_starved() -> None:
    assert not Share("e", "decode", busy=0.5, waiting=0.05).starved
    assert Share("e", "decode", busy=0.3, waiting=0.2).starved
    assert Share("e", "prefill", busy=0.9, waiting=0.0).starved
    assert Share("r", "router", busy=0.3, waiting=0.15).starved


def test_an_autogroup_line_gives_its_niceness_and_an_empty_one_none(tmp_path: Path) -> None:
    # Some containers show an empty /proc/PID/autogroup although autogroups are on (CI did):
    # renice then falls back to the threads' own niceness instead of failing the run.
    from cluster_pools import _group_niceness

    group = tmp_path / "autogroup"
    group.write_text("/autogroup-7 nice -5\n")
    assert _group_niceness(group) == -5
    group.write_text("")
    assert _group_niceness(group) is None
    assert _group_niceness(tmp_path / "absent") is None
