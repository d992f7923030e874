"""`tandem plan`: size a pool from the command line and print the plan (a table, or JSON).

The request flags are planned here; `tandem plan -f pool.yaml` is composed in `tandem.cli.plan`,
which runs the operator's own decision on the manifest (this package may not import the operator)
and prints the plan through `render`.

Exit status: 0 for a feasible plan, 1 for an infeasible one (printed with its reason), 2 when the
request itself is wrong (unknown model or GPU, bad numbers, a file that is not an InferencePool).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tandem.api import (
    API_VERSION,
    KIND,
    DisaggregationMode,
    KvConnector,
    SloSpec,
    TokenStats,
    WorkloadSpec,
)
from tandem.api.lengths import p90_problem
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
    request = parser.add_argument_group("request (instead of -f)")
    request.add_argument("--model", help="Hugging Face id or catalog name")
    request.add_argument(
        "--model-config", type=Path, help="config.json (file or folder) for a model not in the catalog"
    )
    request.add_argument("--dtype", choices=[d.value for d in Dtype], default=Dtype.AUTO.value)
    request.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto")
    request.add_argument(
        "--gpu", type=_gpus, help="GPU type(s) for both roles, comma-separated (the cheapest fit wins)"
    )
    request.add_argument("--prefill-gpu", type=_gpus, help="GPU type(s) for prefill (default: --gpu)")
    request.add_argument(
        "--decode-gpu", type=_gpus, help="GPU type(s) for decode and aggregated (default: --gpu)"
    )
    request.add_argument("--gpus-per-node", type=_positive(int), default=8)
    request.add_argument("--ttft-ms", type=_positive(float), default=_SLO.ttft_ms)
    request.add_argument("--itl-ms", type=_positive(float), default=_SLO.itl_ms)
    request.add_argument("--percentile", type=_positive(float), default=_SLO.percentile)
    request.add_argument("--rps", type=_positive(float), default=_WORKLOAD.requests_per_second)
    request.add_argument(
        "--prompt-tokens", type=_positive(int), default=_WORKLOAD.prompt_tokens.mean, help="mean"
    )
    request.add_argument("--prompt-tokens-p90", type=_positive(int))
    request.add_argument(
        "--output-tokens", type=_positive(int), default=_WORKLOAD.output_tokens.mean, help="mean"
    )
    request.add_argument("--output-tokens-p90", type=_positive(int))
    request.add_argument(
        "--prefix-reuse", type=float, default=0.0, help="share of prompt tokens cached (0-1)"
    )
    request.add_argument(
        "--mode", choices=[m.value for m in DisaggregationMode], default=DisaggregationMode.AUTO.value
    )
    request.add_argument(
        "--connector",
        choices=[c.value for c in KvConnector],
        default=KvConnector.LMCACHE.value,
        help="KV connector; lmcache needs the same TP on prefill and decode, and PP=1",
    )
    request.add_argument("--kv-link-gbps", type=_positive(float), help="prefill->decode link per GPU, Gbit/s")
    request.add_argument("--calibration-dir", type=Path, help="folder of fitted <GPU>.yaml calibrations")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    flags = [(action.dest, action.default, action.option_strings[0]) for action in request._group_actions]
    parser.set_defaults(run=run_request, request_flags=flags)


def read_pool_manifest(args: argparse.Namespace) -> dict[str, Any]:
    """The InferencePool object in ``args.filename`` ('-': stdin), with no request flags beside it."""
    given = [flag for dest, default, flag in args.request_flags if getattr(args, dest) != default]
    if given:
        raise PlannerError(f"-f plans the file as the operator does; drop {', '.join(given)}")
    name = str(args.filename)
    try:
        text = sys.stdin.read() if name == "-" else args.filename.read_text()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise PlannerError(f"{name}: {exc}") from exc
    pools = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(pools) != 1 or pools[0].get("apiVersion") != API_VERSION:
        raise PlannerError(f"{name}: expected one {KIND} ({API_VERSION}), found {len(pools)}")
    pool: dict[str, Any] = pools[0]
    if not isinstance(pool.get("metadata"), dict) or not pool["metadata"].get("name"):
        raise PlannerError(f"{name}: the {KIND} has no metadata.name")
    return pool


def _token_stats(mean: int, p90: int | None, flag: str) -> TokenStats:
    """The lengths two flags give, or why no log-normal has them, naming the flags."""
    problem = None if p90 is None else p90_problem(mean, p90)
    if problem is not None:
        raise PlannerError(f"{flag} {mean} and {flag}-p90 {p90}: {problem}")
    return TokenStats(mean=mean, p90=p90)


def _request(args: argparse.Namespace) -> PlanRequest:
    if not args.model:
        raise PlannerError("give --model (or -f with an InferencePool manifest)")
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
            prompt_tokens=_token_stats(args.prompt_tokens, args.prompt_tokens_p90, "--prompt-tokens"),
            output_tokens=_token_stats(args.output_tokens, args.output_tokens_p90, "--output-tokens"),
            prefix_reuse_fraction=args.prefix_reuse,
        ),
        mode=DisaggregationMode(args.mode),
        kv_link_gbps=args.kv_link_gbps,
        connector=KvConnector(args.connector),
        calibration_dir=args.calibration_dir,
    )


def print_plan(result: Plan, as_json: bool) -> int:
    """Print the plan; the exit status it calls for."""
    sys.stdout.write(result.model_dump_json(indent=2) + "\n" if as_json else render(result))
    return 0 if result.feasible else 1


def run_request(args: argparse.Namespace) -> int:
    """Plan the request the flags describe."""
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
    return print_plan(result, args.json)


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
