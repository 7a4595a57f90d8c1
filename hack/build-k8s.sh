#!/usr/bin/env bash
# Build Kubernetes binaries from source (through the Go module proxy) and
# cache them in OUTDIR. Nothing prebuilt is downloaded.
#
# usage: hack/build-k8s.sh OUTDIR component...
#   components: kube-apiserver kubelet kube-controller-manager kube-scheduler
#               kubectl   (or "all")
#
# Example (envtest needs kube-apiserver plus etcd, see hack/install-etcd.sh):
#   hack/build-k8s.sh .cache/k8s/v1.34.4/bin kube-apiserver kubectl
#   hack/install-etcd.sh .cache/k8s/v1.34.4/bin
#   export KUBEBUILDER_ASSETS=$PWD/.cache/k8s/v1.34.4/bin
#
# Components already present in OUTDIR are skipped, so a second run is
# instant. Key OUTDIR by version (as above): the binaries are not rebuilt
# when K8S_VERSION changes unless OUTDIR changes too.
#
# The build runs inside hack/k8s, a separate wrapper module that requires
# k8s.io/kubernetes at K8S_VERSION with every staging module replaced by its
# published v0.x version. To move to another version, change K8S_VERSION here
# and regenerate hack/k8s/go.mod as its header comment explains.
set -euo pipefail

K8S_VERSION=v1.34.4

# Build flags as in kubernetes' hack/lib/golang.sh: every component except
# kubelet is linked statically (CGO_ENABLED=0); kubelet uses the host's cgo
# setting (default: on, which needs gcc).
GO_TAGS=selinux,notest,grpcnotrace

usage() {
	echo "usage: $0 OUTDIR component..." >&2
	echo "  components: kube-apiserver kubelet kube-controller-manager kube-scheduler kubectl (or all)" >&2
	exit 2
}

# `hack/build-k8s.sh --print-version` prints K8S_VERSION, so callers (Makefile,
# tests) can derive the cache folder from this one place:
#   KUBEBUILDER_ASSETS=.cache/k8s/$(hack/build-k8s.sh --print-version)/bin
if [[ "${1:-}" == --print-version ]]; then
	echo "$K8S_VERSION"
	exit 0
fi

[[ $# -ge 2 ]] || usage

ALL=(kube-apiserver kubelet kube-controller-manager kube-scheduler kubectl)

# Rough cold build times on 2 cores, shown in the progress line.
estimate() {
	case "$1" in
	kube-apiserver) echo "~6-9 min" ;;
	kubelet) echo "~2-4 min" ;;
	kube-controller-manager) echo "~1-2 min" ;;
	*) echo "~1 min" ;;
	esac
}

ver=${K8S_VERSION#v}
major=${ver%%.*}
minor=${ver#*.}
minor=${minor%%.*}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wrapper="$here/k8s"

outarg=$1
shift

components=()
for c in "$@"; do
	case "$c" in
	all) components+=("${ALL[@]}") ;;
	kube-apiserver | kubelet | kube-controller-manager | kube-scheduler | kubectl) components+=("$c") ;;
	*)
		echo "$0: unknown component '$c'" >&2
		usage
		;;
	esac
done

mkdir -p "$outarg"
outdir=$(cd "$outarg" && pwd)

# The wrapper module must pin the same version this script stamps into the
# binaries.
if ! grep -Eq "^[[:space:]]*(require[[:space:]]+)?k8s\.io/kubernetes[[:space:]]+${K8S_VERSION//./\\.}([[:space:]]|$)" "$wrapper/go.mod"; then
	echo "$0: $wrapper/go.mod does not require k8s.io/kubernetes $K8S_VERSION" >&2
	exit 1
fi

# Keep the build independent of the caller's environment: no go.work from
# a parent directory, no vendor mode or extra flags from GOFLAGS.
export GOWORK=off
export GOFLAGS=-mod=readonly

# buildDate: the release's publication time as recorded by the module proxy,
# so two builds of the same version are byte-identical.
build_date=$(cd "$wrapper" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes 2>/dev/null || true)
build_date=${build_date:-1970-01-01T00:00:00Z}

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$K8S_VERSION"
	ldflags+=" -X $pkg.gitMajor=$major"
	ldflags+=" -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitCommit="  # commit not known from the module zip
	ldflags+=" -X $pkg.gitTreeState=clean"
	ldflags+=" -X $pkg.buildDate=$build_date"
done

tmp=""
cleanup() { [[ -z "$tmp" ]] || rm -f "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

for c in "${components[@]}"; do
	if [[ -x "$outdir/$c" ]]; then
		echo "$c $K8S_VERSION: cached in $outdir"
		continue
	fi
	echo "building $c $K8S_VERSION (first run only, $(estimate "$c"))..."
	cgo=0
	[[ "$c" == kubelet ]] && cgo=$(go env CGO_ENABLED)
	start=$SECONDS
	tmp="$outdir/.$c.tmp.$$"
	(cd "$wrapper" && CGO_ENABLED=$cgo go build -trimpath -tags "$GO_TAGS" \
		-ldflags "$ldflags" -o "$tmp" "k8s.io/kubernetes/cmd/$c")
	mv -f "$tmp" "$outdir/$c"
	tmp=""
	echo "built $c $K8S_VERSION in $((SECONDS - start))s -> $outdir/$c"
done
