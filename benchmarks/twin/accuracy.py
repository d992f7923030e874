"""Do the plans hold in Tandem's own simulator? The twin's table, for every reference workload.

For each workload of `tandem.sim.twin.REFERENCE_WORKLOADS` (the two plans of issue #13, and chat,
RAG and code on Llama-3.1-8B and 70B on H100) the planner sizes both deployments, aggregated and
disaggregated, and the twin serves each feasible one on the simulator's engine core on a virtual
clock (sim/twin.py: Poisson arrivals at the planned rate, log-normal prompts, fixed seeds). It
prints the plan (deployment, layout, replicas), the predicted and measured p90 TTFT and ITL, their
ratios (the target band is 0.75-1.25), whether the queues stayed bounded, and the CPU the twin took
against the simulated time. `*` marks the deployment the planner recommends.

    .venv/bin/python benchmarks/twin/accuracy.py [--seconds S] [--seeds 3] [--only issue-1 ...]

Each ratio is the mean over the seeds, with their range.
"""

from __future__ import annotations

import argparse
import statistics
import time

from tandem.api import DisaggregationMode
from tandem.planner import Plan, plan
from tandem.sim.twin import REFERENCE_WORKLOADS, measure

BAND = (0.75, 1.25)


def layout(result: Plan) -> str:
    decode = result.decode
    assert decode is not None
    text = f"{decode.replicas}x TP{decode.tensor_parallel}"
    if result.deployment == "Disaggregated" and result.prefill:
        text = f"P {result.prefill.replicas}x TP{result.prefill.tensor_parallel} + D {text}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, help="simulated arrival window per run (default: the workload's)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="workload names")
    args = parser.parse_args()
    print(
        f"{'workload':9} {'model':24} {'plan':13} {'layout':20} {'TTFT pred':>9} {'meas':>6} {'ratio':>16} "
        f"{'ITL pred':>8} {'meas':>6} {'ratio':>16}  queues"
    )
    outside, cpu, simulated = 0, 0.0, 0.0
    for workload in REFERENCE_WORKLOADS:
        if args.only and workload.name not in args.only:
            continue
        recommended = plan(workload.request()).recommended
        for mode in (DisaggregationMode.NEVER, DisaggregationMode.ALWAYS):
            request = workload.request(mode)
            result = plan(request)
            name = f"{result.deployment[:5]}{'*' if result.deployment == recommended else ''}"
            if not result.feasible:
                print(f"{workload.name:9} {workload.model[11:]:24} {name:13} infeasible: {result.reason}")
                continue
            started = time.process_time()
            seconds = args.seconds or workload.seconds
            runs = [measure(request, result, seconds=seconds, seed=seed) for seed in range(args.seeds)]
            cpu += time.process_time() - started
            simulated += seconds * args.seeds
            ttft = [m.ttft_ratio for m in runs]
            itl = [m.itl_ratio for m in runs]
            inside = all(BAND[0] <= statistics.mean(r) <= BAND[1] for r in (ttft, itl))
            bounded = all(m.bounded for m in runs)
            outside += not (inside and bounded)
            print(
                f"{workload.name:9} {workload.model[11:]:24} {name:13} {layout(result):20} "
                f"{runs[0].predicted_ttft_ms:9.0f} {statistics.mean(m.ttft_ms for m in runs):6.0f} "
                f"{statistics.mean(ttft):5.2f} [{min(ttft):.2f}-{max(ttft):.2f}] "
                f"{runs[0].predicted_itl_ms:8.1f} {statistics.mean(m.itl_ms for m in runs):6.1f} "
                f"{statistics.mean(itl):5.2f} [{min(itl):.2f}-{max(itl):.2f}]  "
                f"{'bounded' if bounded else 'OVERLOADED'}{'' if inside else '  OUTSIDE THE BAND'}",
                flush=True,
            )
    print(f"\n{outside} plan(s) outside {BAND[0]}-{BAND[1]} or overloaded")
    print(
        f"twin: {simulated:.0f} simulated seconds in {cpu:.1f} s of CPU ({simulated / max(cpu, 1e-9):.0f}x)"
    )
    return 1 if outside else 0


if __name__ == "__main__":
    raise SystemExit(main())
