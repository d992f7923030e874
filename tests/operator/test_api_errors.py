"""Which API failures are worth retrying as they are, judged by the API server's own Status.

The cluster test sends the requests to a real kube-apiserver through the operator's client, so the
answers classified are the server's, not ones written here.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tandem.devcluster.testing import ClusterUnderTest
from tandem.operator.kube import KubeClient, KubeError, NotFoundError, is_transient

DUPLICATE_ENV = (
    'failed to create typed patch object: .spec.template.spec.containers[name="c"].env: duplicate '
    'entries for key [name="X"]'
)


@pytest.mark.parametrize(
    ("status", "reason", "message", "transient"),
    [
        (0, "", "ClientConnectorError(...)", True),  # no answer
        (409, "Conflict", "the object has been modified", True),
        (409, "AlreadyExists", 'deployments.apps "x" already exists', True),
        (429, "TooManyRequests", "too many requests", True),
        (500, "InternalError", 'Internal error occurred: failed calling webhook "w"', True),
        (503, "ServiceUnavailable", "the server is currently unable to handle the request", True),
        (504, "Timeout", "the server was unable to return a response in the time allotted", True),
        (500, "", "etcdserver: request timed out", True),
        (500, "", DUPLICATE_ENV, False),  # server-side apply cannot read the body
        (
            500,
            "",
            "failed to create typed patch object: .spec.topologyKeys: field not declared in schema",
            False,
        ),
        (400, "BadRequest", "the body of the request was in an unknown format", False),
        (403, "Forbidden", 'deployments.apps "x" is forbidden: exceeded quota', False),
        (404, "NotFound", 'roles.rbac.authorization.k8s.io "r" not found', False),
        (404, "", "404 page not found", True),  # the resource type is not (yet) served
        (422, "Invalid", 'Deployment.apps "x" is invalid: spec.replicas: Invalid value: -1', False),
    ],
)
def test_retry_only_what_may_succeed_as_it_is(
    status: int, reason: str, message: str, transient: bool
) -> None:
    assert is_transient(status, reason, message) is transient


def test_error_reads_as_the_request_and_the_servers_answer() -> None:
    error = KubeError(422, "spec.replicas: Invalid value", reason="Invalid", request="PATCH /apis/x")
    assert str(error) == "PATCH /apis/x: HTTP 422 Invalid: spec.replicas: Invalid value"
    assert KubeError(500, DUPLICATE_ENV).answer == "HTTP 500"
    assert KubeError(0, "timed out").answer == "no answer"


DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "raw"},
    "spec": {
        "replicas": 0,
        "selector": {"matchLabels": {"app": "raw"}},
        "template": {
            "metadata": {"labels": {"app": "raw"}},
            "spec": {"containers": [{"name": "c", "image": "none", "env": [{"name": "X", "value": "1"}]}]},
        },
    },
}


@pytest.fixture
async def client(devcluster: ClusterUnderTest) -> AsyncIterator[KubeClient]:
    api = await KubeClient.connect(devcluster.kubeconfig)
    yield api
    await api.close()


def deployment(namespace: str, **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(DEPLOYMENT)
    body["metadata"]["namespace"] = namespace
    body["spec"].update(spec)
    return body


@pytest.mark.cluster
async def test_the_api_servers_refusals_are_permanent_with_its_message(
    client: KubeClient, namespace: str
) -> None:
    """kubernetes_asyncio raises nothing for an HTTP error here (``_preload_content=False``): the
    client reads the Status. An env var named twice (as ``engine.env`` naming one the operator
    sets did) gets a 500 without a reason; the same request always does."""
    twice = deployment(namespace)
    twice["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "2"})
    with pytest.raises(KubeError) as duplicate:
        await client.apply(twice)
    assert (duplicate.value.status, duplicate.value.reason) == (500, "")
    assert 'duplicate entries for key [name="X"]' in duplicate.value.message
    assert not duplicate.value.transient

    with pytest.raises(KubeError) as invalid:
        await client.apply(deployment(namespace, replicas=-1))
    assert (invalid.value.status, invalid.value.reason) == (422, "Invalid")
    assert "spec.replicas" in invalid.value.message and not invalid.value.transient

    with pytest.raises(NotFoundError) as missing:
        await client.apply(deployment("no-such-namespace-anywhere"))
    assert (
        missing.value.reason == "NotFound"
        and '"no-such-namespace-anywhere" not found' in missing.value.message
    )
    assert not missing.value.not_served  # a Status: the type is served, the object is not there

    # A type it serves nowhere (a CRD's, once deleted): a 404 without a Status.
    with pytest.raises(NotFoundError) as unrouted:
        await client.request("GET", f"/apis/no-such-group.example.com/v1/namespaces/{namespace}/things/x")
    assert unrouted.value.not_served and unrouted.value.transient

    applied = await client.apply(deployment(namespace))  # the same object, well formed, is taken
    assert applied["metadata"]["namespace"] == namespace


class _RacedWrite(KubeClient):
    """The API server's answers to two applies: the first lost a race (`reason`), the second updates."""

    def __init__(self, reason: str) -> None:
        self.sent: list[str] = []
        self.reason = reason

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.sent.append(f"{method} {path}")
        if len(self.sent) == 1:
            raise KubeError(409, 'services "chat": lost a race', reason=self.reason)
        return {"kind": "Service"}


@pytest.mark.parametrize("reason", ["AlreadyExists", "Conflict"])
async def test_an_apply_that_lost_a_race_is_applied_again(reason: str) -> None:
    """Two pools of a shared router apply its Service at once: the API server answers one of them
    409, AlreadyExists (both created it) or Conflict ("the object has been modified": both updated
    it; seen on the devcluster), though an apply of it now would update it."""
    client = _RacedWrite(reason)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "chat", "namespace": "ns"}}
    assert await client.apply(service) == {"kind": "Service"}
    assert client.sent == ["PATCH /api/v1/namespaces/ns/services/chat"] * 2
