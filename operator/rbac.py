"""The operator's RBAC, generated from the kinds it manages (``tandem operator rbac``).

Least privilege: read pools and write only their status; create, patch and delete the children
kinds it renders; read EndpointSlices and pools, because the router Roles it creates grant that
(Kubernetes lets a subject grant only what it holds); read HorizontalPodAutoscalers (the
autoscaler's conflicts); post Events; read CRDs (a LeaderWorkerSet or GIE CRD installed later
changes what the operator renders and what kopf watches). No namespaces: kopf does not scan for
them (``handlers.kopf_settings``), it watches the ones named.
"""

from __future__ import annotations

from typing import Any

from tandem.api import GROUP, PLURAL
from tandem.operator.kinds import CHILD_KINDS
from tandem.operator.naming import MANAGED_BY, NAME_LABEL

Manifest = dict[str, Any]
READ = ["get", "list", "watch"]
WRITE = ["create", "patch", "delete"]


def operator_rules() -> list[Manifest]:
    plurals: dict[str, list[str]] = {}
    for kind in CHILD_KINDS:
        names = plurals.setdefault(kind.group, [])
        if kind.plural not in names:
            names.append(kind.plural)
    children = [
        {"apiGroups": [group], "resources": names, "verbs": READ + WRITE} for group, names in plurals.items()
    ]
    return [
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": READ},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch", "update"]},
        # blockOwnerDeletion on the children's owner references needs this where the
        # OwnerReferencesPermissionEnforcement admission plugin is on.
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/finalizers"], "verbs": ["update"]},
        *children,
        # The routers' EndpointSlices are also where the autoscaler finds the router pods to scrape.
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
        # The autoscaler leaves a workload an HPA (or KEDA's) scales to it, and says so.
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": READ},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": READ},
    ]


def rbac_manifests(namespace: str, name: str = MANAGED_BY) -> list[Manifest]:
    """ServiceAccount, ClusterRole and ClusterRoleBinding for an operator in ``namespace``."""
    labels = {NAME_LABEL: name}
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "rules": operator_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": role_ref,
            "subjects": [subject],
        },
    ]
