#!/usr/bin/env bash
# Prints a KUBEBUILDER_ASSETS folder that can serve custom resources.
#
# The kube-apiserver in ../shared/envtest (Kubernetes 1.20.2 built with Go 1.19) vendors
# github.com/modern-go/reflect2 1.0.1, which breaks under Go >= 1.18: every request that decodes a
# custom resource (unstructured JSON) panics and the connection drops. Kubernetes fixed it by moving
# to reflect2 1.0.2. When the shared apiserver is that known-broken build (by checksum), this
# script rebuilds kube-apiserver once from Debian's kubernetes 1.20.2 source with Debian's
# reflect2 1.0.2 vendored in (nothing else changes), caches it, and prints a folder with that
# apiserver beside the shared etcd and kube-controller-manager. Any other assets pass through.
#   export KUBEBUILDER_ASSETS="$(devcluster/envtest/assets.sh)"
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
shared_setup=${TANDEM_ENVTEST_SETUP:-$here/../../../shared/envtest/setup.sh}
assets=$("$shared_setup")

broken_apiserver=629bfa9de8e40ef6fe5c71a17f2efd22975f72aeda9e599c986232cf1d3aa537
if [ "$(sha256sum "$assets/kube-apiserver" | cut -d' ' -f1)" != "$broken_apiserver" ]; then
    echo "$assets"
    exit 0
fi

cache=${XDG_CACHE_HOME:-$HOME/.cache}/tandem/envtest/k8s-1.20.2-reflect2
if [ -x "$cache/kube-apiserver" ] && [ -f "$cache/.built" ]; then
    echo "$cache"
    exit 0
fi

log() { echo "envtest: $*" >&2; }
log "the shared kube-apiserver cannot serve custom resources (reflect2 1.0.1 under Go 1.19);"
log "rebuilding it once with reflect2 1.0.2 into $cache (about 10 minutes on 2 cores)"

source_version=1.20.5+really1.20.2
orig=kubernetes_${source_version}.orig.tar.gz
orig_sha256=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc
pool=http://deb.debian.org/debian/pool/main/k/kubernetes

need_packages=()
command -v go >/dev/null || need_packages+=(golang-go)
[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || need_packages+=(golang-github-modern-go-reflect2-dev)
command -v rsync >/dev/null || need_packages+=(rsync)
if [ "${#need_packages[@]}" -gt 0 ]; then
    log "installing ${need_packages[*]} (Debian)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tandem-apiserver.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "fetching $orig from Debian"
python3 - "$pool/$orig" "$work/$orig" <<'PY'
import sys, urllib.request
urllib.request.urlretrieve(sys.argv[1], sys.argv[2])
PY
echo "$orig_sha256  $work/$orig" | sha256sum -c --quiet - >&2
tar -xzf "$work/$orig" -C "$work"
src=$work/kubernetes-1.20.2

rm -rf "$src/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
sed -i 's#github.com/modern-go/reflect2 => github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 => github.com/modern-go/reflect2 v1.0.2#' \
    "$src/go.mod" "$src/vendor/modules.txt"
sed -i 's#^\# github.com/modern-go/reflect2 v1.0.1 => github.com/modern-go/reflect2 v1.0.1#\# github.com/modern-go/reflect2 v1.0.1 => github.com/modern-go/reflect2 v1.0.2#' \
    "$src/vendor/modules.txt"

log "building cmd/kube-apiserver"
(
    cd "$src"
    export GOCACHE=$work/gocache HOME=$work/home CGO_ENABLED=0
    unset GOFLAGS GO111MODULE GOPATH
    mkdir -p "$HOME"
    make WHAT=cmd/kube-apiserver KUBE_BUILD_PLATFORMS=linux/amd64 GOFLAGS=-p=2 GOLDFLAGS="-s -w" >&2
)

mkdir -p "$cache"
install -m 0755 "$src/_output/local/bin/linux/amd64/kube-apiserver" "$cache/kube-apiserver"
ln -sfn "$assets/etcd" "$cache/etcd"
ln -sfn "$assets/kube-controller-manager" "$cache/kube-controller-manager"
touch "$cache/.built"
echo "$cache"
