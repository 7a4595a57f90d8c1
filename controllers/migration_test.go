package controllers_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/plugin/netconf"
)

// A thin Multus's file as its install writes it, its delegate the node's
// network inline; confReal is that network's own file, which Multus leaves
// in the conf dir.
const (
	confMultus = `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus",` +
		`"kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig","delegates":[{"cniVersion":"0.3.1","name":"real","type":"bridge"}]}`
	confMultusShim = `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim","socketDir":"/run/multus"}`
	confGenie      = `{"cniVersion":"0.3.1","name":"k8s-pod-network","type":"genie"}`
	confDanm       = `{"name":"meta_cni","type":"danm","kubeconfig":"/etc/kubernetes/danm.kubeconfig"}`
	confReal       = `{"cniVersion":"1.0.0","name":"real","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}`
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Meta-plugins' configs, installed or not, anywhere in the conf dir and
// in any plugin of a chain, are never the default network.
func TestMetaPluginConfigsAreNeverTheDefaultNetwork(t *testing.T) {
	c := newNodeConfig(t) // setting leftovers aside is off
	files := map[string]string{
		"00-multus.conf":         confMultus,
		"00-genie.conf":          confGenie,
		"00-danm.conf":           confDanm,
		"01-multus-shim.conf":    confMultusShim,
		"02-chained.conflist":    `{"cniVersion":"1.0.0","name":"chained","plugins":[{"type":"bridge"},{"type":"multus"}]}`,
		"03-old-plexus.conflist": confOldPlexus,
		"10-real.conflist":       confReal,
	}
	for name, content := range files {
		writeFile(t, filepath.Join(c.ConfDir, name), content)
	}
	c.Sync(quiet)
	s := c.State()
	if want := filepath.Join(c.ConfDir, "10-real.conflist"); s.DefaultFile != want {
		t.Fatalf("default network from %q (%s), want %q", s.DefaultFile, s.DefaultError, want)
	}
	wrapped(t, c, "real", "1.0.0")
	for name, content := range files { // off: nothing was touched
		if got := readFile(t, filepath.Join(c.ConfDir, name)); got != content {
			t.Errorf("%s changed to %s", name, got)
		}
	}
}

// A leftover (its plugin gone from the bin dir) sorting before plexus's
// conflist keeps the node not Ready while setting leftovers aside is off,
// and the reason says what to do.
func TestLeftoverKeptMakesTheNodeNotReady(t *testing.T) {
	c := newNodeConfig(t)
	withShim(t, c)
	leftover := filepath.Join(c.ConfDir, "00-multus.conf")
	writeFile(t, leftover, confMultus)
	writeFile(t, filepath.Join(c.ConfDir, "10-real.conflist"), confReal)
	c.Sync(quiet)
	s := c.State()
	if !s.ConfigCurrent || s.Default == nil || s.Default.List.Name != "real" {
		t.Fatalf("state %+v: want the conflist written, wrapping real", s)
	}
	if len(s.Foreign) != 1 || s.Foreign[0].File != leftover || s.Foreign[0].Reason() != controllers.ReasonLeftoverNotSetAside {
		t.Fatalf("foreign %+v, want %s as a leftover not set aside", s.Foreign, leftover)
	}
	err := c.Ready()
	if err == nil {
		t.Fatal("Ready with a leftover sorting first")
	}
	for _, want := range []string{leftover, "sorts before 00-plexus.conflist", "every new pod fails", "leftover config of multus",
		filepath.Join(c.BinDir, "multus") + " is gone", "--set-aside-leftovers", "remove it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Ready: %v\nwant it to say %q", err, want)
		}
	}
	if got := readFile(t, leftover); got != confMultus {
		t.Errorf("leftover changed: %s", got)
	}
}

// With setting aside on, leftovers are renamed out of every runtime's
// reach (wherever they sort), restorably; one written again with the same
// content goes without a second copy, one with other content gets its own.
func TestLeftoversAreSetAsideRestorably(t *testing.T) {
	c := newNodeConfig(t)
	withShim(t, c)
	c.SetAsideLeftovers = true
	leftover := filepath.Join(c.ConfDir, "00-multus.conf")
	later := filepath.Join(c.ConfDir, "70-genie.conf") // sorts after plexus's: the runtime's pick once plexus goes
	writeFile(t, leftover, confMultus)
	writeFile(t, later, confGenie)
	writeFile(t, filepath.Join(c.ConfDir, "10-real.conflist"), confReal)
	c.Sync(quiet)
	s := c.State()
	if err := c.Ready(); err != nil || len(s.Foreign) != 0 {
		t.Fatalf("Ready: %v, foreign %+v; want ready once the leftovers are aside", err, s.Foreign)
	}
	mustNotExist(t, leftover)
	mustNotExist(t, later)
	if got := readFile(t, leftover+controllers.SetAsideSuffix); got != confMultus {
		t.Errorf("set-aside copy %q, want the leftover's content", got)
	}
	if got := readFile(t, later+controllers.SetAsideSuffix); got != confGenie {
		t.Errorf("set-aside copy %q, want the leftover's content", got)
	}
	if s.SetAsides != 2 || len(s.SetAside) != 2 {
		t.Fatalf("set-asides %d %+v, want 2", s.SetAsides, s.SetAside)
	}
	msg := s.SetAside[0].Message(c.BinDir)
	for _, want := range []string{leftover, leftover + controllers.SetAsideSuffix, "multus",
		"to restore it: mv " + leftover + controllers.SetAsideSuffix + " " + leftover} {
		if !strings.Contains(msg, want) {
			t.Errorf("set-aside message %q lacks %q", msg, want)
		}
	}
	// The set-aside names are ones no runtime reads.
	files, err := netconf.ConfFiles(c.ConfDir)
	if want := []string{conflistPath(c), filepath.Join(c.ConfDir, "10-real.conflist")}; err != nil || !slices.Equal(files, want) {
		t.Errorf("configs a runtime reads: %v (%v), want %v", files, err, want)
	}
	wrapped(t, c, "real", "1.0.0")

	// Written again, as a Multus daemon still running elsewhere might: the
	// copy aside already holds it.
	writeFile(t, leftover, confMultus)
	c.Sync(quiet)
	mustNotExist(t, leftover)
	mustNotExist(t, leftover+controllers.SetAsideSuffix+".2")
	// Other content: a second copy.
	other := strings.Replace(confMultus, "0.3.1", "0.4.0", 1)
	writeFile(t, leftover, other)
	c.Sync(quiet)
	mustNotExist(t, leftover)
	if got := readFile(t, leftover+controllers.SetAsideSuffix+".2"); got != other {
		t.Errorf("second copy %q", got)
	}
	if s := c.State(); s.SetAsides != 4 {
		t.Errorf("set-asides %d, want 4", s.SetAsides)
	}
}

// A meta-plugin whose binary is still in the bin dir may be running: its
// file is never touched, and the node is not Ready until it is gone.
func TestInstalledMetaPluginIsNeverTouched(t *testing.T) {
	c := newNodeConfig(t)
	withShim(t, c)
	c.SetAsideLeftovers = true
	writeFile(t, filepath.Join(c.BinDir, "multus-shim"), "#!/bin/sh\nexit 1\n")
	installed := filepath.Join(c.ConfDir, "00-multus.conf")
	writeFile(t, installed, confMultusShim)
	before := stat(t, installed)
	writeFile(t, filepath.Join(c.ConfDir, "10-real.conflist"), confReal)
	c.Sync(quiet)
	c.Sync(quiet)
	if got, after := readFile(t, installed), stat(t, installed); got != confMultusShim || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("installed meta-plugin's config touched: %s", got)
	}
	s := c.State()
	if len(s.Foreign) != 1 || s.Foreign[0].Reason() != controllers.ReasonMetaPluginInstalled || s.SetAsides != 0 {
		t.Fatalf("foreign %+v, set-asides %d; want multus-shim reported as installed", s.Foreign, s.SetAsides)
	}
	err := c.Ready()
	if err == nil {
		t.Fatal("Ready while an installed meta-plugin's config sorts first")
	}
	for _, want := range []string{installed, "still installed", "uninstall multus-shim first", filepath.Join(c.BinDir, "multus-shim")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Ready: %v\nwant it to say %q", err, want)
		}
	}
	// The conflist is in place, for the moment the meta-plugin goes.
	wrapped(t, c, "real", "1.0.0")

	// Uninstalled (its binary removed): now a leftover, set aside.
	if err := os.Remove(filepath.Join(c.BinDir, "multus-shim")); err != nil {
		t.Fatal(err)
	}
	c.Sync(quiet)
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready after the uninstall: %v", err)
	}
	mustNotExist(t, installed)
}

// Any other config sorting first (a network's own, or one that cannot be
// loaded) is reported too, and left alone.
func TestForeignConfigSortingFirstIsReported(t *testing.T) {
	c := newNodeConfig(t)
	withShim(t, c)
	c.SetAsideLeftovers = true
	calico := filepath.Join(c.ConfDir, "00-calico.conflist")
	broken := filepath.Join(c.ConfDir, "00-aaa.conf")
	writeFile(t, calico, `{"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"calico"}]}`)
	writeFile(t, broken, `{"cniVersion":`)
	c.Sync(quiet)
	s := c.State()
	if len(s.Foreign) != 2 || s.Foreign[0].File != broken || s.Foreign[1].File != calico ||
		s.Foreign[0].Reason() != controllers.ReasonForeignConfigFirst || s.Foreign[1].Reason() != controllers.ReasonForeignConfigFirst {
		t.Fatalf("foreign %+v", s.Foreign)
	}
	err := c.Ready()
	if err == nil {
		t.Fatal("Ready while other configs sort first")
	}
	for _, want := range []string{calico, "(network k8s-pod-network, calico)", "rename it to sort after 00-plexus.conflist", broken, "cannot be loaded"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Ready: %v\nwant it to say %q", err, want)
		}
	}
	mustNotExist(t, calico+controllers.SetAsideSuffix)
	if err := os.Rename(calico, filepath.Join(c.ConfDir, "10-calico.conflist")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	c.Sync(quiet)
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready once renamed: %v", err)
	}
	wrapped(t, c, "k8s-pod-network", "0.3.1")
}

// A node whose only config is a meta-plugin's has no default network, and
// says why.
func TestOnlyAMetaPluginsConfigIsNoDefaultNetwork(t *testing.T) {
	c := newNodeConfig(t)
	withShim(t, c)
	c.SetAsideLeftovers = true
	writeFile(t, filepath.Join(c.ConfDir, "00-multus.conf"), confMultus)
	c.Sync(quiet)
	s := c.State()
	if s.Default != nil || c.Ready() == nil {
		t.Fatalf("state %+v: want no default network and not Ready", s)
	}
	for _, want := range []string{"00-multus.conf (multus)", "never the default network", "delegates"} {
		if !strings.Contains(s.DefaultError, want) {
			t.Errorf("DefaultError %q lacks %q", s.DefaultError, want)
		}
	}
	mustNotExist(t, filepath.Join(c.ConfDir, "00-multus.conf"))
}
