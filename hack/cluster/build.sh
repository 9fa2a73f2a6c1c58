#!/usr/bin/env bash
# Build the test control plane's binaries from their Go modules, once, into
# ~/.cache/trainyard/k8s/<K8S_VERSION>/bin (override the root with TRAINYARD_CACHE_DIR).
#
# Why from source: no Docker engine runs here and no release tarball is reachable;
# only the Go module proxy is. Each binary is skipped when it already exists with a
# stamp naming its pinned version, so a second run costs nothing. Builds run one
# after another under `nice` because the machine's two cores are shared.
# Usage: hack/cluster/build.sh [binary...]   (default: all)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
export PATH=/usr/local/go/bin:$PATH GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
command -v go >/dev/null || { echo "build.sh: Go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }

cache_root=${TRAINYARD_CACHE_DIR:-$HOME/.cache/trainyard}
bin_dir="$cache_root/k8s/$K8S_VERSION/bin"
mkdir -p "$bin_dir"
times_log="$cache_root/k8s/$K8S_VERSION/build-times.log"
nice_cmd=(nice -n "${TRAINYARD_BUILD_NICE:-5}")

k8s_minor=${K8S_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# Helm's default kube version (for `helm template`/`lint` without a cluster) is
# set to the cluster's own, as helm's Makefile does with the k8s modules' version.
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

# version_of NAME: the pinned version a binary is stamped with.
version_of() {
    case $1 in
        etcd) echo "$ETCD_VERSION" ;;
        kwok) echo "$KWOK_VERSION" ;;
        helm) echo "$HELM_VERSION" ;;
        *) echo "$K8S_VERSION" ;;
    esac
}

# stamp_of NAME: what a binary's .version stamp must say for it to be reused: its
# pinned version plus a hash of the recipe (this script and its wrapper module),
# so a changed ldflag or go.sum rebuilds it instead of silently keeping the old one.
stamp_of() {
    local recipe=("$here/build.sh")
    case $1 in
        etcd) recipe+=("$here/go/etcd/go.mod" "$here/go/etcd/go.sum" "$here/go/etcd/main.go") ;;
        kwok | helm) ;;
        *) recipe+=("$here/go/kubernetes/go.mod" "$here/go/kubernetes/go.sum") ;;
    esac
    echo "$(version_of "$1") $(cat "${recipe[@]}" | sha256sum | cut -c1-16)"
}

build_one() {
    local name=$1 out="$bin_dir/$1" start
    if [ -x "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$(stamp_of "$name")" ]; then
        return 0
    fi
    echo "build.sh: building $name $(version_of "$name") (this takes minutes on a cold cache)" >&2
    start=$(date +%s)
    case $name in
        etcd)
            grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$here/go/etcd/go.mod" ||
                { echo "build.sh: go/etcd/go.mod does not pin etcd $ETCD_VERSION" >&2; exit 1; }
            (cd "$here/go/etcd" && "${nice_cmd[@]}" go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
            ;;
        kube-apiserver | kube-controller-manager | kube-scheduler | kubectl)
            grep -q "k8s.io/kubernetes $K8S_VERSION" "$here/go/kubernetes/go.mod" ||
                { echo "build.sh: go/kubernetes/go.mod is not for $K8S_VERSION; run gen-k8s-wrapper.sh" >&2; exit 1; }
            (cd "$here/go/kubernetes" && "${nice_cmd[@]}" go build -trimpath \
                -ldflags "-s -w $k8s_ldflags" -o "$out.tmp" "k8s.io/kubernetes/cmd/$name")
            ;;
        kwok)
            # No replace directives upstream, so plain `go install pkg@tag` is reproducible.
            GOBIN="$bin_dir/.kwok" "${nice_cmd[@]}" go install -trimpath \
                -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}" \
                "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
            mv "$bin_dir/.kwok/kwok" "$out.tmp" && rmdir "$bin_dir/.kwok"
            ;;
        helm)
            GOBIN="$bin_dir/.helm" "${nice_cmd[@]}" go install -trimpath \
                -ldflags "-s -w $helm_ldflags" \
                "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
            mv "$bin_dir/.helm/helm" "$out.tmp" && rmdir "$bin_dir/.helm"
            ;;
        *) echo "build.sh: unknown binary $name" >&2; exit 2 ;;
    esac
    mv "$out.tmp" "$out"
    stamp_of "$name" >"$out.version"
    echo "$(date -u +%FT%TZ) $name $(version_of "$name") $(($(date +%s) - start))s" >>"$times_log"
}

# Order: what a cluster needs first comes first; kube-scheduler is optional.
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(etcd kube-apiserver kube-controller-manager kwok kubectl helm kube-scheduler)
for name in "${names[@]}"; do
    build_one "$name"
done
