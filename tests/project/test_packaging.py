"""The distribution's shape: one `tandem` package made of the top-level component folders."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib

from paths import REPO

from tandem.cli import COMMANDS, build_parser

ROOT = REPO


def test_no_top_level_operator_shadows_the_standard_library() -> None:
    # Run from the repository root, where a top-level `operator` package would win the import.
    probe = "import operator, sys; print(operator.__file__); sys.exit(0 if hasattr(operator, 'eq') else 1)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip().startswith(str(ROOT)), result.stdout


def test_every_component_folder_is_packaged() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools["package-dir"]
    assert sorted(mapping) == sorted(setuptools["packages"])
    folders = {
        str(init.parent.relative_to(ROOT))
        for init in ROOT.glob("*/**/__init__.py")
        if init.parent.parts[len(ROOT.parts)]
        in {"api", "cli", "devcluster", "load", "operator", "planner", "router", "sim"}
    } | {"operator"}
    assert folders == set(mapping.values()), "a sub-package is missing from [tool.setuptools] packages"


def test_tandem_command_lists_its_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "tandem.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert f"    {command}" in result.stdout, command


def test_each_subcommand_module_registers_its_own_name() -> None:
    for command in COMMANDS:
        parser = build_parser(command)
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert list(subparsers.choices) == [command]


def test_engine_subcommand_does_not_load_the_operator_stack() -> None:
    probe = "import sys, tandem.cli as c; c.build_parser('sim'); print('kopf' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
