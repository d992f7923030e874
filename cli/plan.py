"""`tandem plan`: the planner's request flags, and ``-f pool.yaml``, which plans an InferencePool
manifest exactly as the operator does.

``-f`` runs the operator's own decision (`tandem.operator.decide`: the CRD's schema, the validate
step, the planner within the operator's default GPU limit, the layout and bounds), so a file that
prints a plan here is one the operator deploys, and one it refuses is refused here with the same
reason and message. What only a cluster knows is assumed: its API groups (a LeaderWorkerSet
controller counts as installed) and the operator's settings (their defaults).

Exit status: 0 for a feasible plan, 1 for an infeasible one (``Infeasible``), 2 for a request or a
spec that is wrong (``InvalidSpec``, or a file that is not an InferencePool).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tandem.api import InferencePoolSpec
from tandem.operator.capabilities import LWS_VERSIONS, Capabilities
from tandem.operator.decide import INFEASIBLE, decide
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import Images, OperatorSettings
from tandem.planner import Plan, PlannerError
from tandem.planner import cli as planner_cli

# What a cluster would tell the operator, assumed for a file.
ASSUMED_CAPABILITIES = Capabilities(lws_api_version=LWS_VERSIONS[0])
OFFLINE_METADATA = {"namespace": "default", "uid": "offline", "generation": 1}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    planner_cli.register(subparsers)
    parser = subparsers.choices["plan"]
    parser.add_argument(
        "-f",
        "--filename",
        type=Path,
        help="an InferencePool manifest ('-': stdin): plan it as the operator does (no request flags)",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if args.filename is None:
        return planner_cli.run_request(args)
    try:
        manifest = planner_cli.read_pool_manifest(args)
    except PlannerError as exc:
        print(f"tandem plan: {exc}", file=sys.stderr)
        return 2
    return plan_manifest(manifest, args.json)


def plan_manifest(manifest: dict[str, Any], as_json: bool) -> int:
    planned: list[Plan] = []
    operator_planner = catalog_planner(OperatorSettings().max_gpus_per_pool)

    def planner(spec: InferencePoolSpec) -> Plan:
        planned.append(operator_planner(spec))
        return planned[-1]

    metadata = {**OFFLINE_METADATA, **(manifest.get("metadata") or {})}
    decision = decide({**manifest, "metadata": metadata}, ASSUMED_CAPABILITIES, Images(), planner)
    problem = decision.problem
    if problem is not None and not (planned and not planned[-1].feasible):
        kind = "infeasible" if problem.reason == INFEASIBLE else "invalid spec"
        print(f"tandem plan: {kind} ({problem.reason}): {problem.message}", file=sys.stderr)
        return 1 if problem.reason == INFEASIBLE else 2
    return planner_cli.print_plan(planned[-1], as_json)
