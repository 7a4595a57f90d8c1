#!/usr/bin/env bash
# Build whereabouts' IPAM plugin (the `whereabouts` binary a node keeps in
# /opt/cni/bin) from source through the Go module proxy, statically, and
# copy its CRDs out of the same module. Nothing prebuilt is downloaded.
#
# usage: hack/build-whereabouts.sh OUTDIR
#        hack/build-whereabouts.sh --print-version
#
# OUTDIR gets bin/whereabouts and crds/*.yaml (IPPool,
# OverlappingRangeIPReservation, NodeSlicePool: the module's doc/crds/). Key
# OUTDIR by version (the Makefile uses .cache/whereabouts/VERSION): a second
# run with both present is instant.
#
# The build runs inside hack/whereabouts, a wrapper module that requires
# whereabouts at WHEREABOUTS_VERSION and repeats its replace directive,
# which `go install module@version` refuses.
set -euo pipefail

WHEREABOUTS_VERSION=v0.9.2
MODULE=github.com/k8snetworkplumbingwg/whereabouts

if [[ "${1:-}" == --print-version ]]; then
	echo "$WHEREABOUTS_VERSION"
	exit 0
fi
[[ $# -eq 1 ]] || {
	echo "usage: $0 OUTDIR | --print-version" >&2
	exit 2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wrapper="$here/whereabouts"
if ! grep -Eq "^require[[:space:]]+${MODULE//./\\.}[[:space:]]+${WHEREABOUTS_VERSION//./\\.}$" "$wrapper/go.mod"; then
	echo "$0: $wrapper/go.mod does not require $MODULE $WHEREABOUTS_VERSION" >&2
	exit 1
fi

mkdir -p "$1/bin" "$1/crds"
outdir=$(cd "$1" && pwd)
if [[ -x "$outdir/bin/whereabouts" ]] && compgen -G "$outdir/crds/*.yaml" >/dev/null; then
	echo "whereabouts $WHEREABOUTS_VERSION: cached in $outdir"
	exit 0
fi

# Independent of the caller's environment: no go.work of a parent
# directory, no flags from GOFLAGS.
export GOWORK=off
export GOFLAGS=-mod=readonly

tmp=""
cleanup() { [[ -z "$tmp" ]] || rm -f "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building whereabouts $WHEREABOUTS_VERSION (first run only, ~1.5 min)..."
start=$SECONDS
tmp="$outdir/bin/.whereabouts.tmp.$$"
# Static: the node may have any C library, and a plugin run from the plexus
# daemon's image before issue 13 had none.
(cd "$wrapper" && CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X $MODULE/pkg/version.Version=$WHEREABOUTS_VERSION -X $MODULE/pkg/version.ReleaseStatus=released" \
	-o "$tmp" "$MODULE/cmd")
mv -f "$tmp" "$outdir/bin/whereabouts"
tmp=""

moddir=$(cd "$wrapper" && go list -m -f '{{.Dir}}' "$MODULE")
rm -f "$outdir"/crds/*.yaml
cp "$moddir"/doc/crds/whereabouts.cni.cncf.io_*.yaml "$outdir/crds/"
chmod 0644 "$outdir"/crds/*.yaml
echo "built whereabouts $WHEREABOUTS_VERSION in $((SECONDS - start))s -> $outdir/bin/whereabouts, CRDs: $(cd "$outdir/crds" && echo *.yaml)"
