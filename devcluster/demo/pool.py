"""The demo's InferencePool: apply it, wait until it is Ready, and describe its plan."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tandem.api import GROUP, PLURAL, VERSION, ConditionType, InferencePool, InferencePoolStatus, PlanStatus
from tandem.devcluster.demo import DemoError

EXAMPLE_POOL = Path(__file__).resolve().parents[2] / "examples" / "simulator-pool.yaml"
_POLL_S = 1.0


def load_manifest(path: Path = EXAMPLE_POOL) -> dict[str, Any]:
    """A pool manifest from a file, validated by the API models (so a bad file fails here)."""
    if not path.is_file():
        raise DemoError(f"no pool manifest at {path}: run the demo from a clone of the repository")
    manifest: dict[str, Any] = yaml.safe_load(path.read_text())
    InferencePool.model_validate(manifest)
    return manifest


def apply(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    """Create the pool, or replace the spec of an existing one of that name."""
    objects = client.CustomObjectsApi(api)
    name = manifest["metadata"]["name"]
    try:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": manifest["spec"]}
        )


def read_status(api: client.ApiClient, namespace: str, name: str) -> InferencePoolStatus | None:
    raw = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status = raw.get("status") if isinstance(raw, dict) else None
    return InferencePoolStatus.model_validate(status) if status else None


def condition(status: InferencePoolStatus | None, kind: ConditionType) -> str:
    """The condition's status ("True", "False", "Unknown"), "Unknown" when absent."""
    if status is None:
        return "Unknown"
    return next((c.status for c in status.conditions if c.type == kind.value), "Unknown")


def progress_line(status: InferencePoolStatus | None) -> str:
    """One line saying where the pool is, for a waiting user."""
    if status is None:
        return "waiting for the operator to plan the pool"
    roles = [
        f"{role} {part.ready}"
        for role, part in (("prefill", status.prefill), ("decode", status.decode), ("router", status.router))
        if part is not None
    ]
    reasons = [f"{c.type}={c.status} ({c.reason})" for c in status.conditions]
    return "; ".join(roles + reasons) or "planned, creating children"


def wait_ready(
    api: client.ApiClient,
    namespace: str,
    name: str,
    timeout_s: float,
    report: Callable[[str], None] = lambda _: None,
) -> InferencePoolStatus:
    """Poll until the pool's Ready condition is True; ``report`` gets each new progress line."""
    deadline = time.monotonic() + timeout_s
    last_line = ""
    status: InferencePoolStatus | None = None
    while time.monotonic() < deadline:
        status = read_status(api, namespace, name)
        if status is not None and condition(status, ConditionType.READY) == "True":
            return status
        line = progress_line(status)
        if line != last_line:
            report(line)
            last_line = line
        time.sleep(_POLL_S)
    raise DemoError(f"pool {namespace}/{name} not Ready after {timeout_s:g}s: {progress_line(status)}")


def describe_plan(plan: PlanStatus | None) -> list[str]:
    """The plan as a few lines of text."""
    if plan is None:
        return ["no plan in the pool's status"]
    lines = [f"recommended: {plan.recommended or '-'} (feasible: {plan.feasible})"]
    for role, part in (("prefill", plan.prefill), ("decode", plan.decode)):
        if part is not None:
            lines.append(
                f"{role}: {part.replicas} x {part.gpu_type}, "
                f"TP {part.tensor_parallel} PP {part.pipeline_parallel} ({part.gpus} GPUs)"
            )
    predicted = [
        f"{label} {value:.0f} ms"
        for label, value in (("TTFT", plan.predicted_ttft_ms), ("ITL", plan.predicted_itl_ms))
        if value is not None
    ]
    if predicted:
        lines.append("predicted " + ", ".join(predicted))
    if plan.prompt_tokens_threshold is not None:
        lines.append(f"prompts of {plan.prompt_tokens_threshold}+ tokens go prefill -> decode (pd)")
    if plan.rationale:
        lines.append(plan.rationale)
    return lines
