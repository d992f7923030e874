"""The Dockerfiles, read as text: pinned bases and packages, a non-root user, and entry points that
exist for every command the chart and the operator give these images."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from paths import REPO

from tandem.cli import build_parser
from tandem.devcluster.images import repository_name
from tandem.operator.capabilities import Capabilities
from tandem.operator.decide import decide
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import (
    DEFAULT_TANDEM_IMAGE,
    DEFAULT_VLLM_IMAGE,
    IMAGE_UID,
    LMCACHE_VERSION,
    VLLM_VERSION,
    Images,
)

ROOT = REPO
IMAGES = ROOT / "images"
TANDEM = IMAGES / "tandem" / "Dockerfile"
VLLM = IMAGES / "vllm-lmcache" / "Dockerfile"
_VERSIONED_TAG = re.compile(r"^[^:@]+(:[^:@]*\d+\.\d+[^:@]*)(@sha256:[0-9a-f]{64})?$")

Instruction = tuple[str, str]


def instructions(dockerfile: Path) -> list[Instruction]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{dockerfile} ends inside a continued line"
    return [(keyword.upper(), rest.strip()) for keyword, _, rest in (line.partition(" ") for line in logical)]


def stages(dockerfile: Path) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for keyword, args in instructions(dockerfile):
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, args))
    return found


def base_images(dockerfile: Path) -> list[str]:
    names = {
        args.split()[-1] for kw, args in instructions(dockerfile) if kw == "FROM" and " AS " in args.upper()
    }
    bases = [args.split()[0] for kw, args in instructions(dockerfile) if kw == "FROM"]
    return [b for b in bases if b not in names]


def exec_form(args: str) -> list[str]:
    parsed: list[str] = json.loads(args)
    return parsed


def pip_installs(dockerfile: Path) -> list[list[str]]:
    """The argument lists of every `pip install` in RUN instructions."""
    found = []
    for keyword, args in instructions(dockerfile):
        if keyword != "RUN":
            continue
        lexer = shlex.shlex(args, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for word in lexer:
            if word in ("&&", "||", "|", ";", ">", ">>"):
                commands.append([])
            else:
                commands[-1].append(word)
        for words in commands:
            for index in range(len(words) - 1):
                # `pip install`, `/opt/venv/bin/pip install` and `python3 -m pip install` alike.
                if words[index].endswith("pip") and words[index + 1] == "install":
                    found.append(words[index + 2 :])
    return found


def final_user(dockerfile: Path) -> str:
    users = [args for kw, args in stages(dockerfile)[-1] if kw == "USER"]
    assert users, f"{dockerfile}: the final stage sets no USER, so it runs as root"
    return users[-1]


@pytest.mark.parametrize("dockerfile", [TANDEM, VLLM], ids=["tandem", "vllm-lmcache"])
def test_base_images_are_pinned_to_a_version(dockerfile: Path) -> None:
    for image in base_images(dockerfile):
        assert _VERSIONED_TAG.match(image), f"{image} is not pinned to a version tag"
        assert not image.endswith(":latest")


@pytest.mark.parametrize("dockerfile", [TANDEM, VLLM], ids=["tandem", "vllm-lmcache"])
def test_pip_installs_only_pinned_or_hash_checked_packages(dockerfile: Path) -> None:
    installs = pip_installs(dockerfile)
    assert installs, f"{dockerfile}: no pip install found (parser out of date?)"
    for args in installs:
        if "-r" in args:
            assert "--require-hashes" in args, f"lock file installed without --require-hashes: {args}"
            continue
        packages = [a for a in args if not a.startswith("-") and not a.startswith("/tmp/")]
        for package in packages:
            local_wheel = package.startswith("/") and package.endswith(".whl")
            assert local_wheel or re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.\-+]*", package), package
            if local_wheel:
                assert "--no-deps" in args, "a local wheel must not pull unpinned dependencies"


@pytest.mark.parametrize("dockerfile", [TANDEM, VLLM], ids=["tandem", "vllm-lmcache"])
def test_final_stage_runs_as_the_operators_non_root_user(dockerfile: Path) -> None:
    user, _, group = final_user(dockerfile).partition(":")
    assert user.isdigit() and int(user) != 0, "use a numeric uid, so runAsNonRoot can verify it"
    # The pods the operator renders set runAsUser to this uid; files the image owns must match.
    assert int(user) == IMAGE_UID and (not group or int(group) == IMAGE_UID)


def test_tandem_image_installs_every_component() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    top_level = {folder.split("/")[0] for folder in setuptools["package-dir"].values()}
    copied = {
        args.split()[0] for kw, args in instructions(TANDEM) if kw == "COPY" and not args.startswith("--from")
    }
    assert top_level <= copied, f"not copied into the image: {sorted(top_level - copied)}"
    assert {"pyproject.toml", "README.md"} <= {
        a for kw, args in instructions(TANDEM) if kw == "COPY" for a in args.split()
    }


def test_tandem_entry_point_is_the_console_script() -> None:
    entrypoint = [exec_form(args) for kw, args in instructions(TANDEM) if kw == "ENTRYPOINT"][-1]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["tandem"] and scripts["tandem"] == "tandem.cli:main"
    assert repository_name(DEFAULT_TANDEM_IMAGE) == "tandem"  # what the devcluster's kubelet runs locally


def commands_for(image_kind: str) -> set[tuple[str, ...]]:
    """Commands the chart and the operator give containers of the tandem or the vLLM image."""
    with helm.Chart.load(ROOT / "charts" / "tandem") as chart:
        rendered = chart.render({}, name="t", namespace="t")
    manifests: list[dict[str, Any]] = [yaml.safe_load(rendered["tandem/templates/deployment.yaml"])]
    images = Images()
    for example in ("simulator-pool.yaml", "llama-3.1-8b-h100.yaml"):
        body = yaml.safe_load((ROOT / "examples" / example).read_text())
        body["metadata"].update(namespace="ns", uid="0000")
        decision = decide(body, Capabilities(), images, catalog_planner())
        assert decision.objects, f"{example}: {decision.problem}"
        manifests += decision.objects
    containers = [
        container
        for manifest in manifests
        if manifest["kind"] == "Deployment"
        for container in manifest["spec"]["template"]["spec"]["containers"]
    ]
    if image_kind == "tandem":
        return {tuple(c["command"]) for c in containers if repository_name(c["image"]) == "tandem"}
    return {tuple(c["command"]) for c in containers if c["image"] == images.vllm}


def test_every_tandem_subcommand_the_chart_and_operator_run_exists() -> None:
    commands = commands_for("tandem")
    assert {command[:2] for command in commands} >= {
        ("tandem", "operator"),
        ("tandem", "router"),
        ("tandem", "sim"),
    }
    for command in commands:
        assert command[0] == "tandem", command
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([command[1], "--help"])
        assert exited.value.code == 0, f"`tandem {command[1]}` is not a subcommand"


def test_vllm_image_is_the_operators_default_engine_image() -> None:
    (base,) = base_images(VLLM)
    assert base == f"vllm/vllm-openai:{VLLM_VERSION}"
    assert [f"lmcache=={LMCACHE_VERSION}"] == [
        a for args in pip_installs(VLLM) for a in args if a.startswith("lmcache")
    ]
    assert DEFAULT_VLLM_IMAGE in VLLM.read_text(), (
        "the build comment must name the tag the operator defaults to"
    )
    entrypoint = [exec_form(args) for kw, args in instructions(VLLM) if kw == "ENTRYPOINT"][-1]
    assert {tuple(entrypoint)} == commands_for("vllm")


@pytest.mark.parametrize("image", ["tandem", "vllm-lmcache"])
def test_each_image_has_a_readme(image: str) -> None:
    readme = IMAGES / image / "README.md"
    assert readme.is_file()
    assert f"images/{image}/Dockerfile" in readme.read_text(), "the README shows how to build it"
