"""Which containers the devcluster runs, and as what local command."""

from __future__ import annotations

import pytest

from tandem.devcluster.images import ImageNotRunnableError, repository_name, runnable_argv

PYTHON = "/venv/bin/python"
INSTALLED = {"sh": "/bin/sh", "python3": "/usr/bin/python3"}


def run(image: str, argv: list[str], has_command: bool = True) -> list[str]:
    return runnable_argv(image, argv, has_command=has_command, which=INSTALLED.get, python=PYTHON)


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("ghcr.io/tandem-dev/tandem:0.1.0", "tandem"),
        ("tandem", "tandem"),
        ("localhost:5000/tandem", "tandem"),
        ("registry.example:443/org/tandem@sha256:abc", "tandem"),
        ("ghcr.io/tandem-dev/tandem-router:1", "tandem-router"),
        ("docker.io/library/python:3.11", "python"),
    ],
)
def test_repository_name_ignores_registry_tag_and_digest(image: str, repository: str) -> None:
    assert repository_name(image) == repository


def test_tandem_image_runs_this_installation() -> None:
    image = "ghcr.io/tandem-dev/tandem:0.1.0"
    assert run(image, ["tandem", "sim", "--role", "decode"]) == [
        PYTHON,
        "-m",
        "tandem.cli",
        "sim",
        "--role",
        "decode",
    ]
    assert run(image, ["router", "--port", "80"], has_command=False) == [
        PYTHON,
        "-m",
        "tandem.cli",
        "router",
        "--port",
        "80",
    ]
    assert run(image, ["python3", "-m", "tandem.sim"]) == [PYTHON, "-m", "tandem.sim"]
    assert run(image, ["sh", "-c", "exit 0"]) == ["/bin/sh", "-c", "exit 0"]


def test_other_images_run_installed_programs() -> None:
    assert run("python:3.11-slim", ["python3", "-m", "http.server"]) == [
        "/usr/bin/python3",
        "-m",
        "http.server",
    ]


@pytest.mark.parametrize(
    ("image", "argv", "has_command", "named"),
    [
        ("vllm/vllm-openai:v0.6.0", ["--model", "x"], False, "vllm/vllm-openai:v0.6.0"),
        ("busybox", ["no-such-program"], True, "no-such-program"),
        ("ghcr.io/tandem-dev/tandem:0.1.0", ["vllm", "serve"], True, "vllm"),
    ],
)
def test_unrunnable_containers_say_why(image: str, argv: list[str], has_command: bool, named: str) -> None:
    with pytest.raises(ImageNotRunnableError, match=named) as raised:
        run(image, argv, has_command)
    assert image in str(raised.value)
