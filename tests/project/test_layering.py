"""The layering the architecture promises (docs/style.md), checked on the source's imports.

api imports no other Tandem package; the planner and the load generator only api; the simulator
nothing of the operator, router, devcluster or CLI; the router's route choice no HTTP, Kubernetes or
ZMQ library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from paths import REPO

ROOT = REPO
COMPONENTS = ("api", "planner", "operator", "router", "sim", "devcluster", "cli", "load")

FORBIDDEN: dict[str, set[str]] = {
    "api": {f"tandem.{c}" for c in COMPONENTS if c != "api"},
    "planner": {f"tandem.{c}" for c in COMPONENTS if c not in ("api", "planner")},
    "load": {f"tandem.{c}" for c in COMPONENTS if c not in ("api", "load")},
    "sim": {"tandem.operator", "tandem.router", "tandem.devcluster", "tandem.cli"},
    "router/decision": {
        "aiohttp",
        "httpx",
        "starlette",
        "uvicorn",
        "kubernetes",
        "kubernetes_asyncio",
        "zmq",
    },
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(folder: str, forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_component_respects_its_layer(folder: str) -> None:
    assert violations(folder, FORBIDDEN[folder]) == []


def test_scanner_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import httpx\nfrom tandem.router.app import x\n")
    assert imported_modules(module) == {"httpx", "tandem.router.app"}
