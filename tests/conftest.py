"""Fixtures shared by the tests in this folder (cluster fixtures come from tandem.devcluster.testing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CRD_FILE = Path(__file__).resolve().parent.parent / "crds" / "tandem.dev_inferencepools.yaml"


@pytest.fixture(scope="session")
def inferencepool_crd(kube_api: Any) -> dict[str, Any]:
    """The InferencePool CRD, installed (or updated) and Established on the test cluster."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from tandem.devcluster.testing import crd_established, wait_for

    manifest: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    extensions = client.ApiextensionsV1Api(kube_api)
    name = manifest["metadata"]["name"]
    try:
        extensions.create_custom_resource_definition(manifest)
    except ApiException as error:
        if error.status != 409:
            raise
        current = extensions.read_custom_resource_definition(name)
        manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(name, manifest)

    wait_for(lambda: crd_established(kube_api, name), timeout=30, message=f"CRD {name} not Established")
    return manifest
