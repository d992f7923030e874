"""The `tandem` command: one entry point whose subcommands come from the components.

Each component that offers a subcommand has a ``cli`` module with ``register(subparsers)``; the
subcommand's handler is stored as the parser default ``run`` and returns the exit code. Only the
module of the subcommand being run is imported (``tandem sim`` must not load kopf or kubernetes:
engines start faster and lighter); ``tandem --help`` imports them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand -> the component module that registers it, in the order `tandem --help` lists them.
COMMANDS: dict[str, str] = {
    "crds": "tandem.api.cli",
    "plan": "tandem.cli.plan",
    "operator": "tandem.operator.cli",
    "router": "tandem.router.cli",
    "sim": "tandem.sim.cli",
    "load": "tandem.load.cli",
    "devcluster": "tandem.devcluster.cli",
    "demo": "tandem.devcluster.demo.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for one subcommand, or for all of them when ``command`` is None."""
    parser = argparse.ArgumentParser(prog="tandem", description="Disaggregated LLM serving on Kubernetes.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module_name in modules:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments else None
    args = build_parser(command).parse_args(arguments)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
