"""When a child needs applying: missing, changed by the operator, or changed by someone else."""

from __future__ import annotations

import copy
from typing import Any

from tandem.operator.drift import Change, contains, needed_change, stamp
from tandem.operator.naming import DESIRED_HASH_ANNOTATION

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "p-decode", "namespace": "ns", "labels": {"tandem.dev/pool": "p"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "engine",
                        "image": "img:1",
                        "env": [{"name": "A", "value": "1"}],
                        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                    }
                ],
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            }
        },
    },
}


def live_from(stamped: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server returns it: defaults and status added."""
    live = copy.deepcopy(stamped)
    live["metadata"].update(uid="u1", resourceVersion="7", generation=1)
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    live["spec"]["strategy"] = {"type": "RollingUpdate"}
    container = live["spec"]["template"]["spec"]["containers"][0]
    container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    live["status"] = {"replicas": 2}
    return live


def test_stamp_adds_a_digest_of_the_desired_object_without_touching_it() -> None:
    before = copy.deepcopy(DESIRED)
    stamped = stamp(DESIRED)
    assert before == DESIRED
    assert DESIRED_HASH_ANNOTATION in stamped["metadata"]["annotations"]
    changed = copy.deepcopy(DESIRED)
    changed["spec"]["replicas"] = 3
    assert stamp(changed)["metadata"]["annotations"] != stamped["metadata"]["annotations"]


def test_missing_child_is_created() -> None:
    assert needed_change(None, stamp(DESIRED)) is Change.CREATE


def test_unchanged_child_with_server_defaults_needs_nothing() -> None:
    stamped = stamp(DESIRED)
    assert needed_change(live_from(stamped), stamped) is None


def test_new_desired_state_is_an_update_even_when_only_a_field_was_removed() -> None:
    live = live_from(stamp(DESIRED))
    fewer = copy.deepcopy(DESIRED)
    del fewer["spec"]["template"]["spec"]["tolerations"]
    assert contains(live["spec"], fewer["spec"])  # the live object still holds all of it...
    assert needed_change(live, stamp(fewer)) is Change.UPDATE  # ...but the operator wants less


def test_hand_edits_to_operator_fields_are_repaired() -> None:
    stamped = stamp(DESIRED)
    scaled = live_from(stamped)
    scaled["spec"]["replicas"] = 5
    assert needed_change(scaled, stamped) is Change.REPAIR
    image = live_from(stamped)
    image["spec"]["template"]["spec"]["containers"][0]["image"] = "img:hacked"
    assert needed_change(image, stamped) is Change.REPAIR
    dropped = live_from(stamped)
    dropped["spec"]["template"]["spec"]["tolerations"] = []
    assert needed_change(dropped, stamped) is Change.REPAIR


def test_entries_others_add_to_named_lists_are_theirs() -> None:
    stamped = stamp(DESIRED)
    live = live_from(stamped)
    live["spec"]["template"]["spec"]["containers"][0]["env"].insert(0, {"name": "EXTRA", "value": "x"})
    live["metadata"]["labels"]["team"] = "ml"
    assert needed_change(live, stamped) is None
