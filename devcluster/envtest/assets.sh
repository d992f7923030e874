#!/usr/bin/env bash
# Prints the KUBEBUILDER_ASSETS folder of the shared control plane (../shared/envtest), refusing
# the one build known not to serve custom resources.
#
# That build (Kubernetes 1.20.2's kube-apiserver built with Go 1.19) vendors
# github.com/modern-go/reflect2 1.0.1, which breaks under Go >= 1.18: every request that decodes a
# custom resource (unstructured JSON) panics and the connection drops. ../shared/envtest now holds a
# kube-apiserver rebuilt with reflect2 1.0.2 (its README says how); a checkout whose ../shared is
# older still has the broken one, and this script says so instead of letting every InferencePool
# test fail.
#   export KUBEBUILDER_ASSETS="$(devcluster/envtest/assets.sh)"
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
shared_setup=${TANDEM_ENVTEST_SETUP:-$here/../../../shared/envtest/setup.sh}
assets=$("$shared_setup")

# Also in devcluster/assets.py (BROKEN_APISERVER_SHA256), which guards every other way in.
broken_apiserver=629bfa9de8e40ef6fe5c71a17f2efd22975f72aeda9e599c986232cf1d3aa537
if [ "$(sha256sum "$assets/kube-apiserver" | cut -d' ' -f1)" = "$broken_apiserver" ]; then
    echo "envtest: $assets/kube-apiserver is the Kubernetes 1.20.2 build with reflect2 1.0.1 (Go 1.19)," >&2
    echo "envtest: which drops every custom-resource request: update ../shared (its envtest/ now holds" >&2
    echo "envtest: an apiserver rebuilt with reflect2 1.0.2), then run this again" >&2
    exit 1
fi
echo "$assets"
