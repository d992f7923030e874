"""benchmarks/router/bytecodes.py in its child form: the router's request path through its own
server, counted. Its figures are exact, so the test holds what must not come back: cyclic garbage
per request (a cycle through the ASGI scope once took the latency test's p99 from 3 to 60-80 ms)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from paths import REPO

SCRIPT = REPO / "benchmarks" / "router" / "bytecodes.py"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["completion", "stream"])
def test_the_request_path_leaves_no_cyclic_garbage(kind: str) -> None:
    command = [sys.executable, str(SCRIPT), "--child", kind, "--requests", "100", "--warmup", "10"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["garbage_per_request"] < 0.5, figures  # what one run's startup leaves, spread
    assert 1000 < figures["per_request"] < 20000  # bytecodes: the path was served and counted
