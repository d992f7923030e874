#!/usr/bin/env bash
# Regenerate requirements.lock (runtime dependencies of pyproject.toml) and build-requirements.lock
# (its build backend), pinned with sha256 hashes, for the image's Python (3.11). Needs PyPI access.
#   images/tandem/lock.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP_TOOLS_VERSION=7.5.1
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
python3.11 -m venv "$venv"
# Only PyPI: a local pip.conf's extra indexes or find-links must not leak into the lock.
export PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="images/tandem/lock.sh"
"$venv/bin/pip" install --quiet "pip-tools==$PIP_TOOLS_VERSION"
common=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links)
"$venv/bin/pip-compile" "${common[@]}" --upgrade --output-file images/tandem/requirements.lock pyproject.toml
"$venv/bin/pip-compile" "${common[@]}" --upgrade --only-build-deps --all-build-deps \
    --output-file images/tandem/build-requirements.lock pyproject.toml
