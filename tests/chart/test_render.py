"""The Helm chart offline, with real Helm (helm-python-sdk): lint, render, schema, and agreement
with what it packages (the generated CRD, the operator's RBAC and settings, the simulator example)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import helm_python as helm
import pytest
import yaml
from paths import REPO

from tandem.api import InferencePool
from tandem.api.cli import render_crds
from tandem.operator.placement import GFD_PRODUCT_LABEL
from tandem.operator.rbac import operator_rules
from tandem.operator.settings import (
    DEFAULT_MAX_GPUS_PER_POOL,
    DEFAULT_TANDEM_IMAGE,
    IMAGE_UID,
    TANDEM_VERSION,
    settings_from_env,
)

ROOT = REPO
CHART = ROOT / "charts" / "tandem"
RELEASE, NAMESPACE = "demo", "tandem-system"
OPERATOR = "demo-tandem-operator"

# Value sets the chart must lint and render cleanly with.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-on": {
        "samplePool": {"enabled": True},
        "dashboard": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
        "operator": {
            "watchNamespaces": ["team-a", "team-b"],
            "engineImage": "registry.example/vllm-lmcache:v1",
            "gpuProductLabel": "",
            "extraEnv": [{"name": "LOG_FORMAT", "value": "json"}],
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "podAnnotations": {"example.com/team": "ml"},
            "priorityClassName": "system-cluster-critical",
            "maxGpusPerPool": 64,
            "tracing": {"endpoint": "http://otel-collector.monitoring:4318/v1/traces", "samplingRatio": 0.5},
        },
        "imagePullSecrets": [{"name": "ghcr"}],
        "networkPolicy": {"enabled": True},
    },
    "bring-your-own-account": {
        "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "platform-operator"},
        "metrics": {"enabled": False},
    },
    "pinned-images": {
        "image": {"tag": "0.1.0-rc1", "pullPolicy": "Always"},
        "operator": {"childImage": "x/tandem:2"},
    },
    "images-own-user": {"runAsUser": None},
}


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    found = []
    for path, text in render(values).items():
        if path.endswith(".yaml"):
            found += [doc for doc in yaml.safe_load_all(text) if doc]
    return found


def one(found: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [o for o in found if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    return matches[0]


def operator_container(found: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(found, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_lints_without_warnings(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_is_named_labelled_and_placed(values: dict[str, Any]) -> None:
    for obj in objects(values):
        meta = obj["metadata"]
        assert obj["apiVersion"] and 0 < len(meta["name"]) <= 63, obj
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        cluster_scoped = obj["kind"] in ("ClusterRole", "ClusterRoleBinding")
        assert meta.get("namespace") == (None if cluster_scoped else NAMESPACE), obj["kind"]


def test_operator_runs_the_tandem_image_as_non_root_with_a_read_only_root() -> None:
    found = objects()
    pod = one(found, "Deployment")["spec"]["template"]["spec"]
    container = operator_container(found)
    assert container["image"] == f"ghcr.io/tandem-dev/tandem:{TANDEM_VERSION}"
    assert container["command"] == ["tandem", "operator"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["serviceAccountName"] == one(found, "ServiceAccount")["metadata"]["name"]


def test_without_a_uid_pods_stay_non_root_as_their_images_user() -> None:
    found = objects(VALUE_SETS["images-own-user"])
    pod = one(found, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and "runAsUser" not in pod["securityContext"]
    assert env_of(operator_container(found))["TANDEM_RUN_AS_USER"] == "image"


def test_operator_deployment_selects_only_its_own_pods() -> None:
    deployment = one(objects(), "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # Pools' pods carry name=tandem too; their component is router, prefill or decode.
    assert selector["app.kubernetes.io/component"] == "operator"


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_operator_accepts_the_environment_the_chart_gives_it(values: dict[str, Any]) -> None:
    container = operator_container(objects(values))
    settings = settings_from_env(env_of(container))
    merged = {**VALUE_SETS["defaults"], **values}
    operator_values = merged.get("operator", {})
    assert settings.namespaces == tuple(operator_values.get("watchNamespaces", ()))
    assert settings.images.tandem == operator_values.get("childImage", container["image"])
    if "engineImage" in operator_values:
        assert settings.images.vllm == operator_values["engineImage"]
    assert settings.images.run_as_user == merged.get("runAsUser", IMAGE_UID)
    assert settings.max_gpus_per_pool == operator_values.get("maxGpusPerPool", DEFAULT_MAX_GPUS_PER_POOL)
    assert settings.gpu_product_label == operator_values.get("gpuProductLabel", GFD_PRODUCT_LABEL)
    policies = merged.get("networkPolicy", {})
    assert settings.network_policy == (policies.get("enabled", False) and policies.get("kvNotify", True))
    metrics_on = merged.get("metrics", {}).get("enabled", True)
    assert (settings.metrics_port != 0) == metrics_on
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["healthz"] == settings.liveness_port
    assert ports.get("metrics", 0) == settings.metrics_port
    assert settings.otlp_traces_endpoint == (operator_values.get("tracing", {}).get("endpoint") or None)


def test_operator_tracing_is_parent_based_at_the_ratio_given() -> None:
    env = env_of(operator_container(objects(VALUE_SETS["everything-on"])))
    assert {k: v for k, v in env.items() if k.startswith("OTEL_")} == {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel-collector.monitoring:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
        "OTEL_SERVICE_NAME": "tandem-operator",
    }
    assert not any(k.startswith("OTEL_") for k in env_of(operator_container(objects())))


def test_metrics_service_targets_the_operator_metrics_port() -> None:
    found = objects()
    service = one(found, "Service")
    assert (
        service["spec"]["selector"].items()
        <= one(found, "Deployment")["spec"]["selector"]["matchLabels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert "metrics" in {p["name"] for p in operator_container(found)["ports"]}


def test_optional_objects_appear_only_when_enabled() -> None:
    kinds = sorted(o["kind"] for o in objects())
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    everything = sorted(o["kind"] for o in objects(VALUE_SETS["everything-on"]))
    assert everything == sorted([*kinds, "ConfigMap", "InferencePool", "PodMonitor", "ServiceMonitor"])


def test_existing_account_is_used_and_no_rbac_is_made_when_asked() -> None:
    found = objects(VALUE_SETS["bring-your-own-account"])
    assert {o["kind"] for o in found} == {"Deployment"}
    assert one(found, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operator"


def test_existing_account_needs_a_name() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"serviceAccount\.name is required"):
        render({"serviceAccount": {"create": False}})


def test_cluster_role_grants_exactly_the_operators_rules() -> None:
    def normalised(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {
            (group, resource, verb)
            for rule in rules
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }

    found = objects()
    assert normalised(one(found, "ClusterRole")["rules"]) == normalised(operator_rules())
    binding = one(found, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(found, "ClusterRole")["metadata"]["name"]
    account = one(found, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]


def test_chart_crd_is_the_generated_one() -> None:
    with helm.Chart.load(CHART) as chart:
        crds = chart.crds
    assert [c["filename"] for c in crds] == ["tandem/crds/tandem.dev_inferencepools.yaml"]
    assert crds[0]["data"] == render_crds(), (
        "stale: cp crds/tandem.dev_inferencepools.yaml charts/tandem/crds/"
    )


def test_chart_image_and_versions_match_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == TANDEM_VERSION == importlib.metadata.version("tandem")
    assert operator_container(objects())["image"] == DEFAULT_TANDEM_IMAGE


def test_sample_pool_is_the_simulator_example() -> None:
    example = yaml.safe_load((ROOT / "examples" / "simulator-pool.yaml").read_text())
    pool = one(objects({"samplePool": {"enabled": True}}), "InferencePool")
    assert (
        InferencePool.model_validate({**pool, "metadata": {}}).spec
        == InferencePool.model_validate(example).spec
    )
    assert pool["metadata"]["name"] == example["metadata"]["name"]
    assert "app.kubernetes.io/component" not in pool["metadata"]["labels"]  # not the operator's


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"operator": {"workers": 0}}, "/operator/workers"),
        ({"operator": {"maxGpusPerPool": 0}}, "/operator/maxGpusPerPool"),
        ({"operator": {"gpuProductLabel": "gpu product"}}, "/operator/gpuProductLabel"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"operator": {"tracing": {"samplingRatio": 2}}}, "/operator/tracing/samplingRatio"),
        ({"operator": {"tracing": {"endpoint": "collector:4318"}}}, "/operator/tracing/endpoint"),
        ({"operator": {"watchNamespaces": ["Not_A_Namespace"]}}, "/operator/watchNamespaces/0"),
        ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "/metrics/serviceMonitor/interval"),
        # Helm merges a user's map into the default one; null removes a key.
        ({"samplePool": {"spec": {"accelerator": None}}}, "/samplePool/spec"),
        ({"operatr": {}}, "additional properties 'operatr' not allowed"),
    ],
)
def test_schema_rejects_bad_values_with_the_key_named(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        render(values)


def test_notes_say_what_to_apply_next() -> None:
    notes = render()["tandem/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} apply -f examples/simulator-pool.yaml" in notes
    assert f"kubectl -n {NAMESPACE} wait --for=condition=Ready tpool/sim-llama" in notes
    assert f"rollout status deployment/{OPERATOR}" in notes
    with_sample = render({"samplePool": {"enabled": True, "name": "mine"}})["tandem/templates/NOTES.txt"]
    assert "apply -f" not in with_sample
    assert "tpool/mine" in with_sample and "svc/mine-router" in with_sample
