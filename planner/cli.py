"""`tandem plan`: size a pool from the command line and print the plan (a table, or JSON).

Exit status: 0 for a feasible plan, 1 for an infeasible one (printed with its reason), 2 when the
request itself is wrong (unknown model or GPU, bad numbers).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from pydantic import ValidationError

from tandem.api import DisaggregationMode, KvConnector, SloSpec, TokenStats, WorkloadSpec
from tandem.api.spec import Dtype
from tandem.planner.errors import PlannerError
from tandem.planner.hf_config import load_hf_config
from tandem.planner.plan import DeploymentPlan, Plan, RolePlan
from tandem.planner.planner import plan
from tandem.planner.request import PlanRequest

_SLO = SloSpec()
_WORKLOAD = WorkloadSpec()


def _positive(kind: type[int] | type[float]) -> argparse._ActionType:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be positive")
        return value

    return parse


def _gpus(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one GPU type")
    return names


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="size prefill and decode pools for a model, GPUs, targets and a workload",
        description="Size a pool analytically (no GPU needed) and explain the choice.",
    )
    parser.add_argument("--model", required=True, help="Hugging Face id or catalog name")
    parser.add_argument(
        "--model-config", type=Path, help="config.json (file or folder) for a model not in the catalog"
    )
    parser.add_argument("--dtype", choices=[d.value for d in Dtype], default=Dtype.AUTO.value)
    parser.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto")
    parser.add_argument(
        "--gpu", type=_gpus, help="GPU type(s) for both roles, comma-separated (the cheapest fit wins)"
    )
    parser.add_argument("--prefill-gpu", type=_gpus, help="GPU type(s) for prefill (default: --gpu)")
    parser.add_argument(
        "--decode-gpu", type=_gpus, help="GPU type(s) for decode and aggregated (default: --gpu)"
    )
    parser.add_argument("--gpus-per-node", type=_positive(int), default=8)
    parser.add_argument("--ttft-ms", type=_positive(float), default=_SLO.ttft_ms)
    parser.add_argument("--itl-ms", type=_positive(float), default=_SLO.itl_ms)
    parser.add_argument("--percentile", type=_positive(float), default=_SLO.percentile)
    parser.add_argument("--rps", type=_positive(float), default=_WORKLOAD.requests_per_second)
    parser.add_argument(
        "--prompt-tokens", type=_positive(int), default=_WORKLOAD.prompt_tokens.mean, help="mean"
    )
    parser.add_argument("--prompt-tokens-p90", type=_positive(int))
    parser.add_argument(
        "--output-tokens", type=_positive(int), default=_WORKLOAD.output_tokens.mean, help="mean"
    )
    parser.add_argument("--output-tokens-p90", type=_positive(int))
    parser.add_argument("--prefix-reuse", type=float, default=0.0, help="share of prompt tokens cached (0-1)")
    parser.add_argument(
        "--mode", choices=[m.value for m in DisaggregationMode], default=DisaggregationMode.AUTO.value
    )
    parser.add_argument(
        "--connector",
        choices=[c.value for c in KvConnector],
        default=KvConnector.LMCACHE.value,
        help="KV connector; lmcache needs the same TP on prefill and decode",
    )
    parser.add_argument("--kv-link-gbps", type=_positive(float), help="prefill->decode link per GPU, Gbit/s")
    parser.add_argument("--calibration-dir", type=Path, help="folder of fitted <GPU>.yaml calibrations")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(run=_run)


def _request(args: argparse.Namespace) -> PlanRequest:
    prefill = args.prefill_gpu or args.gpu
    decode = args.decode_gpu or args.gpu
    if not prefill or not decode:
        raise PlannerError("give --gpu, or both --prefill-gpu and --decode-gpu")
    return PlanRequest(
        model=args.model,
        hf_config=load_hf_config(args.model_config) if args.model_config else None,
        dtype=Dtype(args.dtype),
        kv_cache_dtype=args.kv_cache_dtype,
        prefill_gpus=prefill,
        decode_gpus=decode,
        gpus_per_node=args.gpus_per_node,
        slo=SloSpec(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, percentile=args.percentile),
        workload=WorkloadSpec(
            requests_per_second=args.rps,
            prompt_tokens=TokenStats(mean=args.prompt_tokens, p90=args.prompt_tokens_p90),
            output_tokens=TokenStats(mean=args.output_tokens, p90=args.output_tokens_p90),
            prefix_reuse_fraction=args.prefix_reuse,
        ),
        mode=DisaggregationMode(args.mode),
        kv_link_gbps=args.kv_link_gbps,
        same_tensor_parallel=args.connector == KvConnector.LMCACHE.value,
        calibration_dir=args.calibration_dir,
    )


def _run(args: argparse.Namespace) -> int:
    try:
        result = plan(_request(args))
    except PlannerError as exc:
        print(f"tandem plan: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()
        )
        print(f"tandem plan: invalid request: {problems}", file=sys.stderr)
        return 2
    sys.stdout.write(result.model_dump_json(indent=2) + "\n" if args.json else render(result))
    return 0 if result.feasible else 1


def _ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _role_row(role: RolePlan) -> str:
    return (
        f"  {role.role:<11}{role.gpu_type:<12}{role.tensor_parallel:>3}{role.pipeline_parallel:>4}"
        f"{role.replicas:>9}{role.gpus:>6}{role.max_batch:>7}{role.kv_capacity_tokens:>11}"
        f"{role.max_requests_per_second:>9.2f}{_ms(role.predicted_ttft_ms):>9}"
        f"{_ms(role.predicted_itl_ms, 1):>8}"
    )


def _alternative_row(d: DeploymentPlan) -> str:
    if not d.feasible:
        return f"  {d.kind:<15}infeasible"
    rps = d.max_requests_per_second or 0.0
    return (
        f"  {d.kind:<15}{d.gpus:>5}{d.cost_per_hour_usd:>10.2f}{_ms(d.predicted_ttft_ms):>9}"
        f"{_ms(d.predicted_itl_ms, 1):>8}{rps:>9.2f}"
    )


def render(p: Plan) -> str:
    """The plan as a readable table."""
    status = "feasible" if p.feasible else "INFEASIBLE"
    threshold = p.prompt_tokens_threshold
    lines = [
        f"Plan for {p.model}: {p.deployment} ({status}; mode {p.mode}, "
        f"recommended {p.recommended or 'none'})",
        f"  {p.requests_per_second:g} requests/s, targets at p{p.percentile:g}",
        "",
        "  role       GPU          TP  PP replicas  GPUs  batch  KV tokens  max rps  TTFT ms  ITL ms",
        *(_role_row(r) for r in (p.prefill, p.decode) if r is not None),
        "",
        "  alternative     GPUs     USD/h  TTFT ms  ITL ms  max rps",
        _alternative_row(p.disaggregated),
        _alternative_row(p.aggregated),
        "",
        f"  handoff threshold: {'none' if threshold is None else f'{threshold} prompt tokens'}",
        "",
        textwrap.fill(p.reason or p.rationale, width=100, initial_indent="  ", subsequent_indent="  "),
    ]
    return "\n".join(lines) + "\n"
