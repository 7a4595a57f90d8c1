// Package plugintest sets up the real things plexus's tests run against:
// network namespaces, veth links, the reference CNI plugins and their
// configurations. Tests that need root or the plugins skip with that reason
// unless PLEXUS_REQUIRE_REAL is set (as `make test` does), where a missing
// prerequisite fails instead, so CI cannot pass by skipping.
package plugintest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// PluginsVersion is the reference plugins release the tests run.
const PluginsVersion = "v1.9.1"

func missing(t testing.TB, format string, args ...interface{}) {
	t.Helper()
	if os.Getenv("PLEXUS_REQUIRE_REAL") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// RequireFile skips the test when a tool it needs is missing at path (or
// fails it, see the package doc); hint says how to get it.
func RequireFile(t testing.TB, path, hint string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		missing(t, "%s not found (%s)", path, hint)
	}
}

// RequireRoot skips (or fails, see the package doc) when not root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root for network namespaces")
	}
}

// RepoRoot finds the module root from the working directory of a test.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !strings.Contains(dir, "/hack/") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// PluginsDir is where the reference plugins are: $CNI_PLUGINS_DIR, or the
// Makefile's cache.
func PluginsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CNI_PLUGINS_DIR")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), ".cache", "cni", PluginsVersion, "bin")
	}
	if _, err := os.Stat(filepath.Join(dir, "bridge")); err != nil {
		missing(t, "reference CNI plugins not found in %s (run `make cni-plugins`)", dir)
	}
	return dir
}

// Name returns a short unique name, safe as a Linux interface name.
func Name(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// NewNS makes a network namespace that is removed when the test ends.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	RequireRoot(t)
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

// Veth makes a veth pair in the current namespace, its first end up, for
// macvlan masters; both ends go when the test ends.
func Veth(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	name := Name("plxm")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth %s: %v", name, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatalf("veth %s up: %v", name, err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(veth) })
	return name
}

// DeleteLinkOnCleanup removes a host link a plugin made (a bridge).
func DeleteLinkOnCleanup(t testing.TB, name string) {
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
}

// Links lists the interface names inside a namespace.
func Links(t testing.TB, n ns.NetNS) []string {
	t.Helper()
	var names []string
	err := n.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listing links: %v", err)
	}
	return names
}

// Link describes one interface inside a namespace.
type Link struct {
	MAC   string
	Addrs []string // CIDR form
}

// LinkIn reads an interface inside a namespace; ok is false if absent.
func LinkIn(t testing.TB, n ns.NetNS, name string) (Link, bool) {
	t.Helper()
	var out Link
	found := false
	err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil
		}
		found = true
		out.MAC = l.Attrs().HardwareAddr.String()
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				continue
			}
			out.Addrs = append(out.Addrs, a.IPNet.String())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return out, found
}

// DefaultRoutes lists "gw dev" of the IPv4 default routes inside a namespace.
func DefaultRoutes(t testing.TB, n ns.NetNS) []string {
	t.Helper()
	return DefaultRoutesOf(t, n, netlink.FAMILY_V4)
}

// DefaultRoutesOf lists "gw dev" of one family's default routes inside a
// namespace; family is netlink.FAMILY_V4 or FAMILY_V6.
func DefaultRoutesOf(t testing.TB, n ns.NetNS, family int) []string {
	t.Helper()
	var out []string
	err := n.Do(func(ns.NetNS) error {
		routes, err := netlink.RouteList(nil, family)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				return err
			}
			out = append(out, fmt.Sprintf("%s %s", r.Gw, l.Attrs().Name))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("routes: %v", err)
	}
	return out
}

// Allocations lists the addresses host-local holds for a network in dataDir.
func Allocations(t testing.TB, dataDir, network string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, network))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "last_reserved_ip") || n == "lock" {
			continue
		}
		ips = append(ips, n)
	}
	return ips
}

// Conf renders a CNI configuration from a Go value.
func Conf(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// M is shorthand for a JSON object.
type M = map[string]interface{}

// HostLocal is a host-local IPAM section keeping its state in dataDir.
func HostLocal(subnet, dataDir string) M {
	return M{"type": "host-local", "subnet": subnet, "dataDir": dataDir}
}

// BridgeList is a bridge + host-local conflist with a gateway, the shape of
// a typical default network.
func BridgeList(name, version, bridge, subnet, dataDir string) string {
	ipam := HostLocal(subnet, dataDir)
	ipam["routes"] = []M{{"dst": "0.0.0.0/0"}}
	return Conf(M{"cniVersion": version, "name": name, "plugins": []M{
		{"type": "bridge", "bridge": bridge, "isGateway": true, "ipam": ipam},
	}})
}

// LockThread keeps the calling goroutine on its thread for the test, for
// code that switches namespaces.
func LockThread(t testing.TB) {
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
}

// ProbeLinkType tries to make a link of a kind (ipvlan, vlan, dummy...) on
// parent and removes it: the error says the kernel lacks it.
func ProbeLinkType(kind, parent string) error {
	p, err := netlink.LinkByName(parent)
	if err != nil {
		return err
	}
	attrs := netlink.LinkAttrs{Name: Name("plxp"), ParentIndex: p.Attrs().Index}
	var l netlink.Link
	switch kind {
	case "ipvlan":
		l = &netlink.IPVlan{LinkAttrs: attrs, Mode: netlink.IPVLAN_MODE_L2}
	case "vlan":
		l = &netlink.Vlan{LinkAttrs: attrs, VlanId: 42}
	case "dummy":
		l = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: attrs.Name}}
	default:
		return fmt.Errorf("no probe for %q", kind)
	}
	if err := netlink.LinkAdd(l); err != nil {
		return err
	}
	return netlink.LinkDel(l)
}

// BinDir is a CNI bin dir of the test's own: links to the reference
// plugins, so that a test may install plexus's shim beside them without
// touching the shared build cache.
func BinDir(t testing.TB) string {
	t.Helper()
	src := PluginsDir(t)
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// built caches the binaries Build made, per package, for the test process.
var built = struct {
	sync.Mutex
	paths map[string]string
}{paths: map[string]string{}}

// Build compiles a main package of this module (such as
// "github.com/plexus-cni/plexus/plugin/plugintest/faulty") once per test
// process, statically like the plugins on a node, and returns the binary's
// path; it is named after the package's last element.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	built.Lock()
	defer built.Unlock()
	if p, ok := built.paths[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "plexus-test-bin")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", path, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, out)
	}
	built.paths[pkg] = path
	return path
}

// FaultyPackage is the test plugin that fails on purpose (see its doc).
const FaultyPackage = "github.com/plexus-cni/plexus/plugin/plugintest/faulty"

// InstallFaulty links the faulty test plugin into a test's own bin dir
// (BinDir), as type "faulty".
func InstallFaulty(t testing.TB, binDir string) {
	t.Helper()
	if err := os.Symlink(Build(t, FaultyPackage), filepath.Join(binDir, "faulty")); err != nil {
		t.Fatal(err)
	}
}

// Faulty is a config of the faulty test plugin, to chain after others:
// failAdd (empty: ADD passes) and failDels (how many DELs of each
// container and interface fail first), counting its DELs in stateDir.
func Faulty(failAdd string, failDels int, stateDir string) M {
	return M{"type": "faulty", "failAdd": failAdd, "failDels": failDels, "stateDir": stateDir}
}
