"""What the kubelet hands ``podinit``: one container's process, as a JSON file (the boundary model)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MountSpec(BaseModel):
    """A host path (a volume's folder or file) to appear at ``target`` inside the pod."""

    model_config = ConfigDict(frozen=True)

    source: str
    target: str
    read_only: bool = False


class ContainerLaunch(BaseModel):
    """Everything ``podinit`` needs to set up the namespace and exec the container's program."""

    model_config = ConfigDict(frozen=True)

    argv: list[str]
    env: dict[str, str]
    working_dir: str
    hostname: str
    # The pod's hosts file, linked at /etc/hosts; the kubelet rewrites it by atomic rename.
    hosts_file: str
    # An empty folder podinit may use (the private root copy, when one is needed).
    scratch: str
    mounts: list[MountSpec] = []
    # Host folders the program reads (its image's files): a non-root user is given the way to them.
    image_files: list[str] = []
    run_as_user: int | None = None
    run_as_group: int | None = None
    # The pod's fsGroup and supplementalGroups, as the runtime gives them to every container process.
    supplemental_groups: list[int] = []
