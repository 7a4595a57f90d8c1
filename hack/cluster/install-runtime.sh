#!/usr/bin/env bash
# Install what the e2e cluster needs from Debian and nothing else:
# containerd and runc (the container runtime kubelet talks to),
# busybox-static (the test image's only binary) and iptables (the node's,
# which the default network's portmap plugin runs for hostPorts, as on any
# node).
#
# usage: hack/cluster/install-runtime.sh
#
# Packages already installed are left alone. apt-get update runs at most
# once, and only when the package lists lack a package or installing from
# them fails. The packages' own services are not started here (there is no
# systemd); the cluster tool starts containerd with its own config.
set -euo pipefail

packages=(containerd runc busybox-static iptables)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
	echo "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), busybox-static, $(iptables --version): installed"
	exit 0
fi

sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
	echo "apt-get update..."
	"${sudo[@]}" apt-get update -qq
	updated=1
}
for p in "${missing[@]}"; do
	policy=$(apt-cache policy "$p" 2>/dev/null || true)
	if ! grep -Eq 'Candidate: [^(]' <<<"$policy"; then
		apt_update
		break
	fi
done
echo "apt-get install ${missing[*]}..."
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
	[[ $updated -eq 0 ]] || exit 1
	apt_update
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), busybox-static, $(iptables --version): installed"
