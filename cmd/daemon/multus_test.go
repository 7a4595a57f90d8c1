package daemon_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// multusAdd attaches a sandbox as Multus did: the node's default network
// as eth0 and the macvlan+host-local network "blue" as net1, through
// libcni with Multus's result cache (dir), and writes Multus's cache file
// of the sandbox there, in Multus's format.
func (f *fixture) multusAdd(dir, id string, netns ns.NetNS, pod *corev1.Pod, blue string) {
	f.t.Helper()
	def, err := os.ReadFile(filepath.Join(f.opts.CNIConfDir, "10-default.conflist"))
	if err != nil {
		f.t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{f.opts.CNIBinDir}, dir, nil)
	args := [][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", pod.Namespace}, {"K8S_POD_NAME", pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", string(pod.UID)}}
	ctx := context.Background()
	for _, d := range []struct{ config, ifname string }{{string(def), "eth0"}, {blue, "net1"}} {
		list, err := libcni.NetworkConfFromBytes([]byte(d.config))
		if err != nil {
			list, err = libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"blue","plugins":[` + d.config + `]}`))
		}
		if err != nil {
			f.t.Fatal(err)
		}
		if _, err := cni.AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: id, NetNS: netns.Path(), IfName: d.ifname, Args: args}); err != nil {
			f.t.Fatalf("Multus's ADD of %s: %v", list.Name, err)
		}
	}
	data, err := json.Marshal([]map[string]interface{}{{"Name": "defnet", "Bytes": def}, {"Name": "team/blue", "Bytes": []byte(blue)}})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id), data, 0o600); err != nil {
		f.t.Fatal(err)
	}
	if got := allocations(f, "defnet", "blue"); len(got) != 2 {
		f.t.Fatalf("allocations after Multus's ADD: %v", got)
	}
}

// Pods Multus attached, deleted once plexus replaced it, release every
// network Multus attached: through the daemon (--multus-cache-dir), and
// through the shim alone when the daemon is down (the node conflist
// carries Multus's cniDir). Multus's cache file goes with them.
func TestSandboxesMultusAttachedAreReleased(t *testing.T) {
	multusDir := ""
	f := newFixture(t, func(f *fixture) {
		multusDir = filepath.Join(f.dir, "multus")
		f.opts.MultusCacheDir = multusDir
	})
	blue := f.macvlanNet("10.241.0.0/24")
	pod := f.pod("old", "blue")

	for _, via := range []string{"daemon", "shim"} {
		id := "c-" + via
		netns := plugintest.NewNS(t)
		f.multusAdd(multusDir, id, netns, pod, blue)
		if via == "shim" {
			f.stopDaemon()
		}
		if _, err := f.cni("DEL", id, netns, pod); err != nil {
			t.Fatalf("DEL through the %s: %v", via, err)
		}
		f.assertClean(netns, "defnet", "blue")
		if _, err := os.Stat(filepath.Join(multusDir, id)); !os.IsNotExist(err) {
			t.Errorf("DEL through the %s left Multus's cache file (%v)", via, err)
		}
		if results, _ := os.ReadDir(filepath.Join(multusDir, "results")); len(results) != 0 {
			t.Errorf("DEL through the %s left Multus's cached results: %v", via, results)
		}
	}
}
