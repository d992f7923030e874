"""The `tandem` command: one entry point whose subcommands come from the components.

Each component that offers a subcommand has a ``cli`` module with ``register(subparsers)``; the
subcommand's handler is stored as the parser default ``run`` and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Components that add subcommands, in the order `tandem --help` lists them.
COMMANDS: tuple[str, ...] = (
    "tandem.api.cli",
    "tandem.router.cli",
    "tandem.devcluster.cli",
    "tandem.sim.cli",
    "tandem.planner.cli",
    "tandem.operator.cli",
    "tandem.devcluster.demo.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem", description="Disaggregated LLM serving on Kubernetes.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
