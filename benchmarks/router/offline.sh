#!/bin/bash
# The router benchmark on a machine without network access (a quiet many-core host).
#
#   benchmarks/router/offline.sh pack [REV]   here, with network: build/routerbench-offline/ holds
#                                             Debian's nginx, its echo module and wrk (extracted),
#                                             Python 3.12 wheels, and the router at REV (default
#                                             HEAD) for a before/after comparison
#   benchmarks/router/offline.sh run [ARGS]   there, from the repository root: run.py with those
#                                             tools (ARGS go to run.py)
#
# The bundle is about 45 MB; build/ is git-ignored. Debian bookworm's binaries need glibc >= 2.36
# and libssl3, libpcre2-8, zlib on the target (Ubuntu 24.04 has them).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
B=$REPO/build/routerbench-offline
PY=3.12 PY_TUPLE=3,12
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
    --platform manylinux_2_5_x86_64)
RUNTIME=(aiohttp "uvicorn>=0.54,<0.55" uvloop httptools msgspec "pydantic>=2.7,<3" prometheus-client pyzmq pyyaml starlette
    "opentelemetry-api>=1.27,<2" "opentelemetry-sdk>=1.27,<2" "opentelemetry-exporter-otlp-proto-http>=1.27,<2")
COMPONENTS=(api cli planner router)  # what the router imports (it sizes handoffs by the planner's formula)

case "${1:-}" in
pack)
    rev=${2:-HEAD}
    rm -rf "$B" && mkdir -p "$B/debs" "$B/root" "$B/before"
    (cd "$B/debs" && apt-get download nginx libnginx-mod-http-echo wrk libluajit-5.1-2 libluajit-5.1-common)
    for deb in "$B"/debs/*.deb; do dpkg-deb -x "$deb" "$B/root"; done
    rm -rf "$B/debs"
    python3 -m pip download -q --only-binary=:all: --python-version "$PY" --implementation cp --abi "cp${PY/./}" \
        "${PLATFORMS[@]}" -d "$B/wheels" "${RUNTIME[@]}" vllm-router==0.1.17 py-spy
    git -C "$REPO" archive "$rev" "${COMPONENTS[@]}" | tar -x -C "$B/before"
    du -sh "$B"
    ;;
run)
    shift
    export PATH=$B/root/usr/sbin:$B/root/usr/bin:$PATH
    export LD_LIBRARY_PATH=$B/root/usr/lib/x86_64-linux-gnu
    export PIP_NO_INDEX=1 PIP_FIND_LINKS=$B/wheels PIP_DISABLE_PIP_VERSION_CHECK=1  # run.py's venv too
    venv=/tmp/routerbench-offline-venv tree=/tmp/routerbench-offline-tree
    python3 -c "import sys; sys.exit(sys.version_info[:2] != ($PY_TUPLE))" || { echo "needs python3 = $PY" >&2; exit 1; }
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "${RUNTIME[@]}"
    mkdir -p "$tree/tandem"
    for component in "${COMPONENTS[@]}"; do ln -sfn "$REPO/$component" "$tree/tandem/$component"; done
    cd "$REPO"
    PYTHONPATH=$tree "$venv/bin/python" benchmarks/router/run.py --compare "$B/before" "$@"
    ;;
*)
    sed -n '2,11p' "$0" >&2
    exit 2
    ;;
esac
