"""The generated CRD on a real kube-apiserver: it installs, the examples apply, bad pools bounce."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import REPO

from tandem.api import GROUP, PLURAL, VERSION, InferencePool

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def kubectl(devcluster: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed")
    return subprocess.run(
        [binary, "--kubeconfig", str(devcluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_applies_with_kubectl_and_reads_back(
    devcluster: Any, inferencepool_crd: Any, namespace: str, example: Path
) -> None:
    applied = kubectl(devcluster, "apply", "-n", namespace, "-f", str(example))
    assert applied.returncode == 0, applied.stderr
    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    fetched = kubectl(devcluster, "get", f"{PLURAL}.{GROUP}", name, "-n", namespace, "-o", "json")
    assert fetched.returncode == 0, fetched.stderr
    pool = InferencePool.model_validate(
        {k: v for k, v in json.loads(fetched.stdout).items() if k != "status"}
    )
    original = InferencePool.model_validate(yaml.safe_load(example.read_text()))
    assert pool.spec == original.spec  # server defaults equal the models' defaults


def test_short_name_lists_pools(devcluster: Any, inferencepool_crd: Any, namespace: str) -> None:
    assert kubectl(devcluster, "apply", "-n", namespace, "-f", str(EXAMPLES[0])).returncode == 0
    listed = kubectl(devcluster, "get", "tpool", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    header = listed.stdout.splitlines()[0].split()
    assert header == ["NAME", "MODEL", "ACCELERATOR", "PREFILL", "DECODE", "RPS", "READY", "AGE"]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {"disaggregation": {"mode": "Sometimes"}},
            'spec.disaggregation.mode: Unsupported value: "Sometimes"',
        ),
        ({"prefill": {"replicas": -1}}, "spec.prefill.replicas: Invalid value: -1"),
        ({"model": None}, "spec.model: Required value"),
    ],
)
def test_server_rejects_invalid_pool_with_clear_message(
    devcluster: Any, inferencepool_crd: Any, namespace: str, patch: dict[str, Any], expected: str
) -> None:
    pool = yaml.safe_load(EXAMPLES[0].read_text())
    pool["metadata"]["name"] = "invalid"
    for key, value in patch.items():
        if value is None:
            del pool["spec"][key]
        else:
            pool["spec"][key] = value
    # --validate=false: the server, not kubectl's client-side check, must reject it.
    result = kubectl(
        devcluster, "apply", "--validate=false", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(pool)
    )
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_crd_serves_the_version(devcluster: Any, inferencepool_crd: Any) -> None:
    resources = kubectl(devcluster, "api-resources", f"--api-group={GROUP}", "-o", "name")
    assert resources.returncode == 0, resources.stderr
    assert f"{PLURAL}.{GROUP}" in resources.stdout.split()
    assert inferencepool_crd["spec"]["versions"][0]["name"] == VERSION
