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

"$(dirname "$0")/../apt-install.sh" "${missing[@]}"
echo "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), busybox-static, $(iptables --version): installed"
