package delegate_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
)

type M = plugintest.M

// sandbox is one pod sandbox with the real reference plugins behind libcni.
type sandbox struct {
	cni     libcni.CNI
	netns   ns.NetNS
	master  string // macvlan master, a veth in the test's namespace
	dataDir string // host-local state
	id      string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	plugintest.RequireRoot(t)
	return &sandbox{
		cni:     libcni.NewCNIConfigWithCacheDir([]string{plugintest.PluginsDir(t)}, t.TempDir(), nil),
		netns:   plugintest.NewNS(t),
		master:  plugintest.Veth(t),
		dataDir: t.TempDir(),
		id:      plugintest.Name("ctr"),
	}
}

// macvlan is an attachment of a macvlan + host-local network.
func (s *sandbox) macvlan(network, version, name, subnet, ifname string) record.Attachment {
	return record.Attachment{
		Network: network,
		IfName:  ifname,
		Config: []byte(plugintest.Conf(M{"cniVersion": version, "name": name, "plugins": []M{
			{"type": "macvlan", "master": s.master, "mode": "bridge", "ipam": plugintest.HostLocal(subnet, s.dataDir)},
		}})),
		Args: [][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", "ns1"}, {"K8S_POD_NAME", "pod"}},
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestAddCheckDel(t *testing.T) {
	for _, version := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(version, func(t *testing.T) {
			s := newSandbox(t)
			const name, subnet = "mv", "10.251.7.0/24"
			_, ipnet, _ := net.ParseCIDR(subnet)
			a := s.macvlan("ns1/mv", version, name, subnet, "net1")

			res, err := delegate.Add(ctx(t), s.cni, s.id, s.netns.Path(), &a)
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
			// "Current" is the newest version the CNI library's result
			// types implement (1.1.0 with libcni v1.3), whatever the
			// delegate answered in.
			if res.CNIVersion != current.ImplementedSpecVersion {
				t.Errorf("result version %q, want %s", res.CNIVersion, current.ImplementedSpecVersion)
			}
			if len(res.IPs) != 1 || !ipnet.Contains(res.IPs[0].Address.IP) {
				t.Fatalf("result IPs %v, want one in %s", res.IPs, subnet)
			}
			ip := res.IPs[0].Address.IP.String()
			if got := plugintest.Allocations(t, s.dataDir, name); !reflect.DeepEqual(got, []string{ip}) {
				t.Errorf("host-local allocations %v, want [%s]", got, ip)
			}
			link, ok := plugintest.LinkIn(t, s.netns, "net1")
			if !ok {
				t.Fatal("no net1 in the sandbox after ADD")
			}
			if !reflect.DeepEqual(link.Addrs, []string{res.IPs[0].Address.String()}) {
				t.Errorf("net1 addresses %v, want [%s]", link.Addrs, res.IPs[0].Address.String())
			}
			if i := res.IPs[0].Interface; i == nil || *i >= len(res.Interfaces) ||
				res.Interfaces[*i].Name != "net1" || res.Interfaces[*i].Mac != link.MAC {
				t.Errorf("result interfaces %+v do not describe net1 (%s)", res.Interfaces, link.MAC)
			}

			if err := delegate.Check(ctx(t), s.cni, s.id, s.netns.Path(), &a); err != nil {
				t.Errorf("Check: %v", err)
			}

			for i := 0; i < 2; i++ {
				if err := delegate.Del(ctx(t), s.cni, s.id, s.netns.Path(), &a); err != nil {
					t.Fatalf("Del #%d: %v", i+1, err)
				}
			}
			if got := plugintest.Allocations(t, s.dataDir, name); len(got) != 0 {
				t.Errorf("host-local allocations after DEL: %v", got)
			}
			if _, ok := plugintest.LinkIn(t, s.netns, "net1"); ok {
				t.Error("net1 still in the sandbox after DEL")
			}
		})
	}
}

// CHECK reports a delegate's interface gone, as a *delegate.Error naming the
// attachment; DEL still frees the address.
func TestCheckFindsMissingInterface(t *testing.T) {
	s := newSandbox(t)
	a := s.macvlan("ns1/mv", "1.0.0", "mv", "10.251.8.0/24", "net1")
	if _, err := delegate.Add(ctx(t), s.cni, s.id, s.netns.Path(), &a); err != nil {
		t.Fatalf("Add: %v", err)
	}
	err := s.netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	if err != nil {
		t.Fatal(err)
	}

	err = delegate.Check(ctx(t), s.cni, s.id, s.netns.Path(), &a)
	var de *delegate.Error
	if !errors.As(err, &de) {
		t.Fatalf("Check: %v, want a *delegate.Error", err)
	}
	if de.Op != "CHECK" || de.Network != "ns1/mv" || de.Plugins != "macvlan" || de.IfName != "net1" {
		t.Errorf("Check error %+v", de)
	}

	if err := delegate.Del(ctx(t), s.cni, s.id, s.netns.Path(), &a); err != nil {
		t.Fatalf("Del: %v", err)
	}
	if got := plugintest.Allocations(t, s.dataDir, "mv"); len(got) != 0 {
		t.Errorf("host-local allocations after DEL: %v", got)
	}
}

// One delegate whose DEL fails must not keep the others from their DEL.
// The broken one was added, and its plugin has gone from the node since:
// its DEL fails (one that never got through its ADD would hold nothing).
func TestTeardownPastAFailure(t *testing.T) {
	tests := []struct {
		name        string
		brokenFirst bool // in attach order; Teardown goes in reverse
	}{
		{"failure torn down first", false},
		{"failure torn down last", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			good := s.macvlan("ns1/good", "1.0.0", "good", "10.251.9.0/24", "net1")
			broken := record.Attachment{
				Network: "ns1/broken",
				IfName:  "net2",
				Config:  []byte(plugintest.Conf(M{"cniVersion": "1.0.0", "name": "broken", "plugins": []M{{"type": "plexus-no-such-plugin"}}})),
				Result:  []byte(`{"cniVersion":"1.0.0"}`),
			}
			if _, err := delegate.Add(ctx(t), s.cni, s.id, s.netns.Path(), &good); err != nil {
				t.Fatalf("Add: %v", err)
			}
			if got := plugintest.Allocations(t, s.dataDir, "good"); len(got) != 1 {
				t.Fatalf("host-local allocations after ADD: %v", got)
			}
			atts := []record.Attachment{good, broken}
			if tt.brokenFirst {
				atts = []record.Attachment{broken, good}
			}

			err := delegate.Teardown(ctx(t), s.cni, s.id, s.netns.Path(), atts)
			if err == nil {
				t.Fatal("Teardown succeeded with a delegate that cannot run")
			}
			var de *delegate.Error
			if !errors.As(err, &de) || de.Op != "DEL" || de.Network != "ns1/broken" || de.Plugins != "plexus-no-such-plugin" {
				t.Errorf("Teardown error %v, want a DEL *delegate.Error for ns1/broken", err)
			}
			if !strings.Contains(err.Error(), "ns1/broken") || strings.Contains(err.Error(), "ns1/good") {
				t.Errorf("Teardown error %q should name ns1/broken only", err)
			}
			if got := plugintest.Allocations(t, s.dataDir, "good"); len(got) != 0 {
				t.Errorf("the good network's address leaked: %v", got)
			}
			if _, ok := plugintest.LinkIn(t, s.netns, "net1"); ok {
				t.Error("net1 still in the sandbox after Teardown")
			}
		})
	}
}

func TestTeardownNothing(t *testing.T) {
	cni := libcni.NewCNIConfigWithCacheDir(nil, t.TempDir(), nil)
	if err := delegate.Teardown(context.Background(), cni, "c1", "", nil); err != nil {
		t.Errorf("Teardown of no attachments: %v", err)
	}
}

// A record cut short while ADD was saving it names no delegate that ran:
// DEL removes it and succeeds, instead of failing the runtime's DEL
// forever.
func TestTeardownOfAPartialRecord(t *testing.T) {
	store, err := record.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store.Dir, "c1.json"), []byte(`{"version":1,"containerID":"c1","attachm`), 0o600); err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(nil, t.TempDir(), nil)
	if err := delegate.DelSandbox(context.Background(), cni, store, "c1", "", nil); err != nil {
		t.Fatalf("DEL of a partial record: %v", err)
	}
	if _, err := store.Load("c1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the partial record is still there: %v", err)
	}
}
