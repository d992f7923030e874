"""Which containers the devcluster can run, and the local command line each becomes.

There are no images here, only this machine's programs:

- an image whose repository's last path component is ``tandem`` (``ghcr.io/tandem-dev/tandem:0.1.0``,
  any registry or tag) is Tandem itself: ``tandem ...`` (also the entry point when ``command`` is
  empty) runs ``<this python> -m tandem.cli ...`` and ``python``/``python3`` run this interpreter;
- otherwise the command's program must exist on this machine (``shutil.which``).

Anything else is not runnable: the pod reports reason ``ImageNotRunnable`` with a message naming
the image.

Tandem's image is made, here, of this installation's folders (``image_files``): the interpreter's
environment and Tandem's own files. A pod that runs as another user is given the way to them, and
only to them (see ``podinit``), as an image's files are in a container.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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


def installation_folders() -> tuple[str, ...]:
    """The folders this installation of Tandem consists of: the environment of this interpreter (a
    venv and the Python it was made from) and the folder holding Tandem's components (a checkout,
    for an editable install; ``site-packages/tandem`` otherwise)."""
    components = Path(__file__).resolve().parents[1]
    prefixes = (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)
    return tuple(sorted({*(os.path.realpath(prefix) for prefix in prefixes), str(components)}))


def image_files(image: str) -> tuple[str, ...]:
    """The host folders an image's containers read: this installation for Tandem's image; none for
    others, whose programs are this machine's own."""
    return installation_folders() if repository_name(image) == TANDEM_REPOSITORY else ()
