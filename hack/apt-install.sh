#!/usr/bin/env bash
# Install Debian packages with apt-get, as root or through sudo, without
# recommended packages.
#
# usage: hack/apt-install.sh PACKAGE...
#
# apt-get update runs at most once, and only when the current package lists
# know no candidate of a package or installing from them fails (stale lists
# point at files the mirror no longer has). hack/install-etcd.sh and
# hack/cluster/install-runtime.sh use it.
set -euo pipefail

[[ $# -gt 0 ]] || {
	echo "usage: $0 PACKAGE..." >&2
	exit 2
}
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
	echo "apt-get update..."
	"${sudo[@]}" apt-get update -qq
	updated=1
}
for p in "$@"; do
	# Captured first: with pipefail, grep -q closing the pipe early would
	# make the pipeline fail.
	policy=$(apt-cache policy "$p" 2>/dev/null || true)
	if ! grep -Eq 'Candidate: [^(]' <<<"$policy"; then
		apt_update
		break
	fi
done
echo "apt-get install $*..."
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@"; then
	[[ $updated -eq 0 ]] || exit 1
	apt_update
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@"
fi
