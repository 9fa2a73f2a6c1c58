#!/usr/bin/env bash
# Generate the Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule)
# from its Go API types, once, and print the directory that holds them.
#
# Why generate: the chart's monitoring objects must be checked by a real apiserver
# (server-side dry run), which needs the CRDs installed; no release YAML is reachable
# here, only the Go module proxy. So controller-gen (sigs.k8s.io/controller-tools) is
# built through the proxy and run over the pinned monitoring/v1 API package, exactly
# as the Prometheus Operator's own Makefile produces its CRDs. Cached under
# ~/.cache/trainyard/prometheus-operator/<version> (root: TRAINYARD_CACHE_DIR); a
# second run only prints the directory.
# Usage: hack/helm/prometheus-crds.sh   -> prints the CRD directory on stdout
set -euo pipefail
CONTROLLER_TOOLS_VERSION=v0.23.0
PROMETHEUS_OPERATOR_VERSION=v0.95.2
MONITORING_MODULE=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring

export PATH=/usr/local/go/bin:$PATH GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
command -v go >/dev/null || { echo "prometheus-crds.sh: Go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }

cache_root=${TRAINYARD_CACHE_DIR:-$HOME/.cache/trainyard}
work="$cache_root/prometheus-operator/$PROMETHEUS_OPERATOR_VERSION"
crd_dir="$work/crds"
stamp="$CONTROLLER_TOOLS_VERSION $PROMETHEUS_OPERATOR_VERSION"
wanted=(servicemonitors podmonitors prometheusrules)

complete() {
    [ "$(cat "$crd_dir/.stamp" 2>/dev/null)" = "$stamp" ] || return 1
    local kind
    for kind in "${wanted[@]}"; do
        [ -s "$crd_dir/monitoring.coreos.com_$kind.yaml" ] || return 1
    done
}

if ! complete; then
    echo "prometheus-crds.sh: generating CRDs of prometheus-operator $PROMETHEUS_OPERATOR_VERSION" \
        "with controller-gen $CONTROLLER_TOOLS_VERSION (minutes on a cold cache)" >&2
    mkdir -p "$work/bin" "$work/mod"
    controller_gen="$work/bin/controller-gen"
    if [ ! -x "$controller_gen" ] || [ "$(cat "$controller_gen.version" 2>/dev/null)" != "$CONTROLLER_TOOLS_VERSION" ]; then
        GOBIN="$work/bin" nice -n "${TRAINYARD_BUILD_NICE:-5}" \
            go install -trimpath -ldflags "-s -w" "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
        echo "$CONTROLLER_TOOLS_VERSION" >"$controller_gen.version"
    fi
    # A throw-away module that requires the pinned API module, so controller-gen's
    # package loader resolves it (and its dependencies) from the module cache.
    cat >"$work/mod/go.mod" <<GOMOD
module trainyard.local/prometheus-crds

go 1.24

require $MONITORING_MODULE $PROMETHEUS_OPERATOR_VERSION
GOMOD
    printf 'package crds\n\nimport _ "%s/v1"\n' "$MONITORING_MODULE" >"$work/mod/tools.go"
    (cd "$work/mod" && go mod tidy >&2)
    rm -rf "$crd_dir.tmp" && mkdir -p "$crd_dir.tmp"
    # maxDescLen=0 drops the field descriptions: the schemas (what the dry run checks)
    # stay whole, and the CRDs stay small enough for any apply mode.
    (cd "$work/mod" && nice -n "${TRAINYARD_BUILD_NICE:-5}" "$controller_gen" \
        crd:crdVersions=v1,maxDescLen=0 \
        paths="$MONITORING_MODULE/v1" \
        output:crd:dir="$crd_dir.tmp" >&2)
    for kind in "${wanted[@]}"; do
        [ -s "$crd_dir.tmp/monitoring.coreos.com_$kind.yaml" ] ||
            { echo "prometheus-crds.sh: controller-gen wrote no CRD for $kind" >&2; exit 1; }
    done
    echo "$stamp" >"$crd_dir.tmp/.stamp"
    rm -rf "$crd_dir" && mv "$crd_dir.tmp" "$crd_dir"
fi
echo "$crd_dir"
