package plugin_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/nodeexec"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// devInfoRoot is a node root filesystem for delegates run chrooted, as the
// daemon runs them: a static busybox, /var/run a link to /run absolute on
// the node (as on most nodes), and two shell plugins: "noop" (an empty
// result) and "devinfo", which writes a vDPA device-info at the
// CNIDeviceInfoFile of its runtimeConfig and says in its result's DNS
// domain whether plexus had put the device plugin's device-info there.
func devInfoRoot(t *testing.T) string {
	t.Helper()
	return plugintest.NodeRoot(t, map[string]string{
		"opt/cni/bin/noop": "#!/bin/sh\n/bin/busybox cat >/tmp/noop-stdin\necho '{\"cniVersion\":\"1.0.0\"}'\n",
		"opt/cni/bin/devinfo": `#!/bin/sh
B=/bin/busybox
IN=$($B cat)
[ "$CNI_COMMAND" = ADD ] || exit 0
F=$(echo "$IN" | $B sed -n 's/.*"CNIDeviceInfoFile":"\([^"]*\)".*/\1/p')
SEEDED=none
[ -f "$F" ] && $B grep -q pci-address "$F" && SEEDED=seeded
$B mkdir -p "$($B dirname "$F")"
printf '{"type":"vdpa","version":"1.1.0","vdpa":{"parent-device":"vdpa:0000:65:00.3","driver":"vhost","path":"/dev/vhost-vdpa-1"}}' > "$F"
printf '{"cniVersion":"1.0.0","dns":{"domain":"%s"}}' "$SEEDED"
`,
	}, map[string]string{"var/run": "/run"})
}

// newDevInfoFixture is an engine running its delegates chrooted into a
// devInfoRoot (returned), the default network being its "noop" plugin.
func newDevInfoFixture(t *testing.T) (*fixture, string) {
	t.Helper()
	f := newFixture(t, "1.0.0")
	root := devInfoRoot(t)
	f.engine.CNI = nodeexec.NewCNI(&nodeexec.NodeExec{Root: root}, []string{"/opt/cni/bin"}, t.TempDir())
	if err := os.Remove(filepath.Join(f.confDir, "10-default.conflist")); err != nil {
		t.Fatal(err)
	}
	f.writeConf("10-noop.conflist", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "defnet", "plugins": []M{{"type": "noop"}}}))
	return f, root
}

// A delegate declaring CNIDeviceInfoFile gets its attachment's NPWG path;
// what it writes there, in the node's root, is the attachment's
// device-info in network-status; DEL and a rolled-back ADD remove it.
func TestDelegatesDeviceInfoFileReachesTheStatus(t *testing.T) {
	f, root := newDevInfoFixture(t)
	f.addNAD("team", "vdpa-net", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "vdpa-net", "plugins": []M{{
		"type": "devinfo", "capabilities": M{plugin.DeviceInfoFileCapability: true}}}}))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "vdpa-net"})
	f.mustDo(f.req("ADD", "c1", nil, pod))

	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	path, _ := rec.Attachments[1].CapabilityArgs[plugin.DeviceInfoFileCapability].(string)
	if want := "/var/run/k8s.cni.cncf.io/devinfo/cni/team-vdpa-net-c1_net1"; path != want {
		t.Fatalf("CNIDeviceInfoFile %q, want %q", path, want)
	}
	if rec.Attachments[0].CapabilityArgs[plugin.DeviceInfoFileCapability] != nil {
		t.Errorf("the default network, which does not declare it, got a device-info path")
	}
	onNode := filepath.Join(root, "run/k8s.cni.cncf.io/devinfo/cni/team-vdpa-net-c1_net1")
	if _, err := os.Stat(onNode); err != nil {
		t.Fatalf("the delegate's file is not in the node's /run: %v", err)
	}
	status := f.published.status["c1"]
	if len(status) != 2 || status[1].DeviceInfo == nil || status[1].DeviceInfo.Type != "vdpa" ||
		status[1].DeviceInfo.Vdpa == nil || status[1].DeviceInfo.Vdpa.Path != "/dev/vhost-vdpa-1" {
		t.Fatalf("status %+v, want net1's device-info as the delegate wrote it", status)
	}
	f.mustDo(f.req("DEL", "c1", nil, pod))
	if _, err := os.Stat(onNode); !os.IsNotExist(err) {
		t.Errorf("device-info file still there after DEL (%v)", err)
	}

	// A failed ADD rolls back, and the file goes with it.
	f.addNAD("team", "broken", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "broken", "plugins": []M{{"type": "plxnosuchplugin"}}}))
	pod2 := f.addPod("team", "failing", map[string]string{"k8s.v1.cni.cncf.io/networks": "vdpa-net, broken"})
	if _, err := f.do(f.req("ADD", "c2", nil, pod2)); err == nil {
		t.Fatal("ADD with a missing plugin succeeded")
	}
	if _, err := os.Stat(filepath.Join(root, "run/k8s.cni.cncf.io/devinfo/cni/team-vdpa-net-c2_net1")); !os.IsNotExist(err) {
		t.Errorf("device-info file still there after the rollback (%v)", err)
	}
}

// With a device plugin device, the delegate finds the device plugin's
// device-info already at its path, as Multus copies it there.
func TestDevicePluginInfoSeedsTheDeviceInfoFile(t *testing.T) {
	f, _ := newDevInfoFixture(t)
	f.engine.Devices = devices{"example.com/vdpa": {"0000:65:00.3"}}
	f.addNAD("team", "vdpa-net", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "vdpa-net", "plugins": []M{{
		"type": "devinfo", "capabilities": M{plugin.DeviceInfoFileCapability: true}}}}))
	f.nets.nads[k8stypes.NamespacedName{Namespace: "team", Name: "vdpa-net"}].Annotations =
		map[string]string{plugin.ResourceNameAnnotation: "example.com/vdpa"}
	dp := &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypePCI, Version: nadv1.DeviceInfoVersion, Pci: &nadv1.PciDevice{PciAddress: "0000:65:00.3"}}
	_ = nadutils.CleanDeviceInfoForDP("example.com/vdpa", "0000:65:00.3")
	if err := nadutils.SaveDeviceInfoForDP("example.com/vdpa", "0000:65:00.3", dp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nadutils.CleanDeviceInfoForDP("example.com/vdpa", "0000:65:00.3") })

	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "vdpa-net"})
	f.mustDo(f.req("ADD", "c1", nil, pod))
	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	if res := string(rec.Attachments[1].Result); !strings.Contains(res, `"domain":"seeded"`) {
		t.Errorf("net1's result %s: the delegate did not find the device plugin's device-info at its path", res)
	}
	if s := f.published.status["c1"]; len(s) != 2 || s[1].DeviceInfo == nil || s[1].DeviceInfo.Type != "vdpa" {
		t.Errorf("status %+v, want the delegate's device-info over the device plugin's", s)
	}
	f.mustDo(f.req("DEL", "c1", nil, pod))
}
