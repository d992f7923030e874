"""Where the twin's TTFT for Qwen3-30B-A3B at 20 requests/s departs from the plan (issue #16).

For the MoE workload of issue #16 (`tandem.sim.twin.QWEN3_MOE_WORKLOAD`: mean 2000 / p90 6000
prompt tokens, 200 output) the planner sizes both deployments, with and without expert
parallelism, and the twin (sim/twin.py) serves each over the workload's window (600 s), on
`--seeds` seeds: the ratios are their mean, with their range. Next to them it prints the
disaggregated plan's p90 TTFT split into its legs (prefill leg, handoff, decode leg's first
token), the longest prompt drawn and how many the context refuses, and the per-prefill service
moments: the planner's (its quantile points, as planner/sizing.py takes them) and those of the
prompts the twin served, each prefilled alone in chunks of the engine's token budget. `--p90` and
`--model` rerun the same table for a thinner prompt tail or a dense model: the controls that tell
a planner gap for MoE from one for the tail. `--serial-prefill` gives the prefill engines one
prompt per step, as the planner's prefill queue (M/G/1 per prompt) assumes, where vLLM's scheduler
admits waiting prompts into a step while its seats and token budget last.

    .venv/bin/python benchmarks/twin/moe_ttft.py [--seconds 600] [--seeds 1] [--p90 6000] [--model M]
        [--serial-prefill]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics

from tandem.api import DisaggregationMode, EngineTiming
from tandem.planner import Plan, load_catalog, plan
from tandem.planner.lengths import LengthDistribution
from tandem.planner.plan import RolePlan
from tandem.sim import twin
from tandem.sim.scheduler import Chunk, Sequence, StepPlan, step_ms


def alone_ms(timing: EngineTiming, prompt: int) -> float:
    """One prompt prefilled alone, chunk by chunk at the token budget."""
    total, start = 0.0, 0
    while start < prompt:
        tokens = min(timing.max_num_batched_tokens, prompt - start)
        chunk = Chunk(Sequence("p", prompt), start, tokens, decode=False)
        total += step_ms(StepPlan(chunks=(chunk,)), timing)
        start += tokens
    return total


def moments(values: list[float]) -> str:
    return (
        f"E[S] {statistics.mean(values):6.1f} ms  E[S^2] {statistics.mean(v * v for v in values):8.0f} ms^2"
    )


def spread(ratios: list[float]) -> str:
    """The mean ratio, and the range over the seeds when there are several."""
    mean = f"{statistics.mean(ratios):4.2f}"
    return mean if len(ratios) == 1 else f"{mean} [{min(ratios):.2f}-{max(ratios):.2f}]"


def describe(role: RolePlan) -> str:
    ep = " EP" if role.expert_parallel else ""
    return f"{role.role} {role.replicas}x DP{role.data_parallel} TP{role.tensor_parallel}{ep}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    moe = twin.QWEN3_MOE_WORKLOAD
    parser.add_argument("--seconds", type=float, default=moe.seconds)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--p90", type=int, default=moe.prompt_p90)
    parser.add_argument("--model", default=moe.model)
    parser.add_argument(
        "--serial-prefill",
        action="store_true",
        help="prefill engines take one prompt per step (max_num_seqs 1), as the planner's queue serves them",
    )
    args = parser.parse_args()
    workload = dataclasses.replace(moe, model=args.model, prompt_p90=args.p90)
    for mode in (DisaggregationMode.ALWAYS, DisaggregationMode.NEVER):
        for ep in (True, False):
            request = workload.request(mode).model_copy(update={"expert_parallel": ep})
            result = plan(request)
            if not result.feasible:
                print(f"{mode.value:6} EP {ep!s:5} infeasible: {result.reason}")
                continue
            if args.serial_prefill:
                result = serial_prefill(result)
            roles = [r for r in (result.prefill, result.decode) if r is not None and r.replicas]
            runs = [twin.measure(request, result, seconds=args.seconds, seed=s) for s in range(args.seeds)]
            m = runs[0]
            print(
                f"{mode.value:6} EP {ep!s:5} {'; '.join(map(describe, roles))}\n"
                f"  TTFT {m.predicted_ttft_ms:5.0f} -> {statistics.mean(r.ttft_ms for r in runs):6.0f} ms "
                f"({spread([r.ttft_ratio for r in runs])})  "
                f"ITL {m.predicted_itl_ms:4.1f} -> {statistics.mean(r.itl_ms for r in runs):4.1f} ms "
                f"({spread([r.itl_ratio for r in runs])})  "
                f"{'bounded' if all(r.bounded for r in runs) else 'OVERLOADED'}"
            )
            if result.prefill is not None and result.prefill.replicas:
                legs(request, result.prefill, result.requests_per_second, args.seconds)
    return 0


def serial_prefill(result: Plan) -> Plan:
    """The plan with its prefill engines admitting one prompt per step."""
    if result.prefill is None:
        return result
    timing = result.prefill.engine_timing.model_copy(update={"max_num_seqs": 1})
    return result.model_copy(update={"prefill": result.prefill.model_copy(update={"engine_timing": timing})})


def legs(request: twin.PlanRequest, prefill: RolePlan, rps: float, seconds: float) -> None:
    """The prefill leg alone, on the arrivals `measure` draws (same seed)."""
    rng = random.Random(0)
    drawn = twin.poisson_arrivals(request, rps, seconds, rng)
    context = load_catalog().model(request.model).max_context_tokens or max(
        a.prompt_tokens + 1 for a in drawn
    )
    arrivals = [a for a in drawn if twin.fits(a, context)]
    runs = twin._serve_role(prefill, [twin.Arrival(a.at, a.prompt_tokens, 1) for a in arrivals], 3 * seconds)
    measured = [
        s for run in runs for s in run.served if s.reached >= seconds * twin.WARMUP_FRACTION and s.done
    ]
    ttfts = [1000 * s.ttft for s in measured]
    peak = max(load.waiting for run in runs for load in run.load)
    latency = twin._handoff_latency_ms(request, prefill, load_catalog())
    print(
        f"  prefill leg TTFT p50 {twin.percentile(ttfts, 50):.0f} p90 {twin.percentile(ttfts, 90):.0f} ms, "
        f"most waiting on an engine {peak}, handoff latency {latency:.1f} ms, "
        f"{len(drawn) - len(arrivals)} of {len(drawn)} refused (over {context} tokens)"
    )
    timing = prefill.engine_timing
    points = LengthDistribution.from_stats(request.workload.prompt_tokens).points
    print(
        f"  planner's points (up to {max(points)} tokens): {moments([alone_ms(timing, p) for p in points])}"
    )
    taken = [a.prompt_tokens for a in arrivals]
    print(f"  prompts served (up to {max(taken)} tokens): {moments([alone_ms(timing, p) for p in taken])}")


if __name__ == "__main__":
    raise SystemExit(main())
