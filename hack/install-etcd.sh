#!/usr/bin/env bash
# Make sure an etcd binary exists and link it into OUTDIR, so that
# KUBEBUILDER_ASSETS=OUTDIR holds both kube-apiserver (hack/build-k8s.sh) and
# etcd, which is what envtest needs.
#
# usage: hack/install-etcd.sh OUTDIR
#
# If no etcd is on PATH, Debian's etcd-server package (etcd 3.4, works with
# kube-apiserver 1.34) is installed with apt-get. Nothing else is downloaded.
# apt-get update runs at most once, and only when the current package lists
# do not know etcd-server or installing from them fails.
#
# Note: on hosts without /usr/sbin/policy-rc.d (i.e. not a container image)
# the package's postinst enables and starts an etcd system service on
# 127.0.0.1:2379. envtest does not need it (it starts its own etcd on a free
# port); stop/disable it if unwanted.
set -euo pipefail

[[ $# -eq 1 ]] || {
	echo "usage: $0 OUTDIR" >&2
	exit 2
}
mkdir -p "$1"
outdir=$(cd "$1" && pwd)

# Find an etcd on PATH, ignoring OUTDIR's own link.
find_etcd() {
	local p
	p=$(PATH=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$outdir" | paste -sd: -) command -v etcd || true)
	[[ -n "$p" ]] && echo "$p"
	return 0
}

etcd=$(find_etcd)
if [[ -z "$etcd" && -x /usr/bin/etcd ]]; then
	etcd=/usr/bin/etcd
fi

if [[ -z "$etcd" ]]; then
	"$(dirname "$0")/apt-install.sh" etcd-server
	etcd=$(find_etcd)
	[[ -n "$etcd" ]] || etcd=/usr/bin/etcd
	[[ -x "$etcd" ]] || {
		echo "$0: etcd-server installed but no etcd binary found" >&2
		exit 1
	}
fi

etcd=$(readlink -f "$etcd")
if [[ "$(readlink -f "$outdir/etcd" 2>/dev/null || true)" != "$etcd" ]]; then
	ln -sfn "$etcd" "$outdir/etcd"
fi
echo "etcd $("$outdir/etcd" --version 2>/dev/null | sed -n 's/^etcd Version: //p') -> $outdir/etcd ($etcd)"
