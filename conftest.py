"""Repository-wide pytest setup: the Kubernetes fixtures (devcluster, kube_api, namespace)."""

pytest_plugins = ("tandem.devcluster.testing",)
