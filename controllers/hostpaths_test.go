package controllers

import "testing"

func TestHostPathsShowsTheNodesPaths(t *testing.T) {
	for _, tc := range []struct {
		prefix HostPaths
		in     string
		want   string
	}{
		{"/host", "/host/etc/cni/net.d/00-plexus.conflist", "/etc/cni/net.d/00-plexus.conflist"},
		{"/host/", "cluster (bridge) in /host/etc/cni/net.d/10-bridge.conflist", "cluster (bridge) in /etc/cni/net.d/10-bridge.conflist"},
		{"/host", "plugins [sriov] not in /host/opt/cni/bin; see /host/opt/cni/bin/README", "plugins [sriov] not in /opt/cni/bin; see /opt/cni/bin/README"},
		{"/host", "/hostile/file and /var/lib/plexus stay", "/hostile/file and /var/lib/plexus stay"},
		{"", "/host/etc/cni/net.d", "/host/etc/cni/net.d"},
		{"/", "/etc/cni/net.d", "/etc/cni/net.d"},
	} {
		if got := tc.prefix.Show(tc.in); got != tc.want {
			t.Errorf("HostPaths(%q).Show(%q) = %q, want %q", tc.prefix, tc.in, got, tc.want)
		}
	}
}
