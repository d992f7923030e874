"""Which containers the devcluster can run, and the local command line each becomes.

There are no images here, only this machine's programs:

- an image whose repository's last path component is ``tandem`` (``ghcr.io/tandem-dev/tandem:0.1.0``,
  any registry or tag) is Tandem itself: ``tandem ...`` (also the entry point when ``command`` is
  empty) runs ``<this python> -m tandem.cli ...`` and ``python``/``python3`` run this interpreter;
- otherwise the command's program must exist on this machine (``shutil.which``).

Anything else is not runnable: the pod reports reason ``ImageNotRunnable`` with a message naming
the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

NOT_RUNNABLE_REASON = "ImageNotRunnable"
TANDEM_REPOSITORY = "tandem"
_PYTHONS = ("python", "python3")


class ImageNotRunnableError(Exception):
    """The container cannot run on this machine; ``str()`` is the message the pod shows."""


def repository_name(image: str) -> str:
    """The last path component of an image reference, without tag or digest."""
    reference = image.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def runnable_argv(
    image: str,
    argv: Sequence[str],
    has_command: bool,
    which: Callable[[str], str | None],
    python: str,
) -> list[str]:
    """The local command line for a container, or ``ImageNotRunnableError``.

    ``argv`` is the expanded ``command`` + ``args``; ``has_command`` says whether ``command`` was
    given (otherwise ``argv`` holds only arguments to the image's entry point).
    """
    if repository_name(image) == TANDEM_REPOSITORY:
        full = list(argv) if has_command else ["tandem", *argv]
        if full[0] == "tandem":
            return [python, "-m", "tandem.cli", *full[1:]]
        if full[0] in _PYTHONS:
            return [python, *full[1:]]
    elif not has_command:
        raise ImageNotRunnableError(
            f"image {image!r} is not runnable here: the devcluster has no images, so a container that "
            "is not Tandem's needs a `command` naming a program installed on this machine"
        )
    else:
        full = list(argv)
    program = which(full[0])
    if program is None:
        raise ImageNotRunnableError(
            f"image {image!r} is not runnable here: its command {full[0]!r} is not a program on this machine "
            f"(the devcluster runs image repository {TANDEM_REPOSITORY!r} as Tandem, and other containers "
            "only through locally installed programs)"
        )
    return [program, *full[1:]]
