"""Goodput per GPU on the in-process twin: the highest rate at which 90 % of requests meet both
targets, per GPU, for four ways to serve a workload, as ratios to aggregated serving.

This is the virtual-clock twin (sim/twin.py: the simulator's engine core, no HTTP, no router, no
devcluster), not a cluster measurement. A request meets the targets when its TTFT and its mean
inter-token latency are both within them. For each workload:

  (a) Tandem's plan, as recommended, with the planner's handoff threshold when disaggregated;
  (b) aggregated serving on the same GPUs: the planner's aggregated layout, as many replicas as
      (a)'s GPUs hold;
  (c) the planner's disaggregated pools with a fixed 1,000-token threshold (shorter prompts are
      prefilled on a decode replica);
  (d) the same pools with an 800-character rule, taken as 200 tokens (about 4 characters a token
      of English text; the twin's prompts are token counts).

Each rate is found by bisection (a run of about 1,500 requests per probe, seed 0).

    .venv/bin/python benchmarks/twin/goodput.py [--only rag-8b chat-8b ...] [--probes 7]
"""

from __future__ import annotations

import argparse
import time

from tandem.api import DisaggregationMode
from tandem.planner import Plan, plan
from tandem.sim.twin import REFERENCE_WORKLOADS, Workload, measure

MEETING = 0.9  # share of requests that must meet both targets
REQUESTS_PER_PROBE = 1500
CHARS_PER_TOKEN = 4
DEFAULT = ("chat-8b", "rag-8b", "code-8b", "rag-70b")


def goodput_rps(workload: Workload, deployed: Plan, threshold: int, probes: int) -> float:
    """The highest rate (bisection) at which MEETING of the requests meet both targets."""
    request = workload.request()

    def meets(rate: float) -> bool:
        seconds = max(60.0, REQUESTS_PER_PROBE / rate)
        measured = measure(request, deployed, rps=rate, seconds=seconds, threshold=threshold)
        return measured.goodput(workload.ttft_ms, workload.itl_ms) >= MEETING

    low, high = 0.0, max(deployed.max_requests_per_second or workload.rps, workload.rps)
    while meets(high):
        low, high = high, 2 * high
    for _ in range(probes):
        mid = (low + high) / 2
        low, high = (mid, high) if meets(mid) else (low, mid)
    return low


def aggregated_on(result: Plan, gpus: int) -> Plan:
    """The plan's aggregated alternative deployed on `gpus` GPUs."""
    role = result.aggregated.decode
    assert role is not None
    replicas = max(1, gpus // (role.tensor_parallel * role.pipeline_parallel))
    scaled = role.model_copy(update={"replicas": replicas, "gpus": replicas * role.gpus // role.replicas})
    return result.model_copy(update={"deployment": "Aggregated", "decode": scaled, "gpus": scaled.gpus})


def disaggregated(workload: Workload) -> Plan:
    return plan(workload.request(DisaggregationMode.ALWAYS))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=list(DEFAULT), help="workload names")
    parser.add_argument("--probes", type=int, default=7, help="bisection steps per rate")
    args = parser.parse_args()
    print("in-process twin (virtual clock), not the devcluster; goodput: >= 90 % meet both targets")
    print(f"{'workload':9} {'serving':38} {'GPUs':>4} {'req/s':>7} {'req/s/GPU':>9} {'vs (b)':>7}")
    started = time.process_time()
    for workload in REFERENCE_WORKLOADS:
        if workload.name not in args.only:
            continue
        tandem = plan(workload.request())
        split = disaggregated(workload)
        own_threshold = tandem.prompt_tokens_threshold or 0
        ways = [
            (f"(a) Tandem: {tandem.deployment}", tandem, own_threshold),
            ("(b) aggregated, same GPUs", aggregated_on(tandem, tandem.gpus), 0),
            ("(c) PD, 1,000-token threshold", split, 1000),
            ("(d) PD, 800-character rule", split, 800 // CHARS_PER_TOKEN),
        ]
        rates = [(name, served, goodput_rps(workload, served, t, args.probes)) for name, served, t in ways]
        baseline = rates[1][2] / rates[1][1].gpus
        for name, deployed, rate in rates:
            per_gpu = rate / deployed.gpus
            print(
                f"{workload.name:9} {name:38} {deployed.gpus:4} {rate:7.2f} {per_gpu:9.3f} "
                f"{per_gpu / baseline:6.2f}x",
                flush=True,
            )
    print(f"CPU {time.process_time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
