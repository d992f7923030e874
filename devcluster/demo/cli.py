"""`tandem demo`: the local demo (see tandem.devcluster.demo)."""

from __future__ import annotations

import argparse
import os
import sys

ONCE_ENV = "DEMO_ONCE"


def _say(line: str) -> None:
    print(line, flush=True)


def _run(args: argparse.Namespace) -> int:
    try:
        # The dev extras (Helm SDK, openai): imported only here, so `tandem --help` works without them.
        from tandem.devcluster.demo.run import DemoOptions, main
    except ImportError as exc:
        print(
            f"tandem demo needs the dev extras ({exc.name}): pip install -e '.[dev]' (make install)",
            file=sys.stderr,
        )
        return 2
    once = args.once or os.environ.get(ONCE_ENV, "") not in ("", "0")
    options = DemoOptions(once=once, namespace=args.namespace, ready_timeout_s=args.timeout)
    return main(options, _say)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run Tandem end to end on a local cluster (devcluster or kind)",
        description="Start a cluster, install the chart, apply the simulator pool, stream a short and a long "
        f"prompt through the router, then keep running until Ctrl-C ({ONCE_ENV}=1 or --once: exit after).",
    )
    parser.add_argument("--once", action="store_true", help=f"exit after the prompts (also {ONCE_ENV}=1)")
    parser.add_argument("--namespace", default="tandem-demo", help="namespace of the release and the pool")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the pool to be Ready"
    )
    parser.set_defaults(run=_run)
