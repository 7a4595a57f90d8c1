package controllers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/go-logr/logr"

	"github.com/plexus-cni/plexus/controllers"
)

// quiet is the context the tests sync with: its logger discards.
var quiet = logr.NewContext(context.Background(), logr.Discard())

const (
	confA = `{"cniVersion":"0.4.0","name":"a","type":"bridge"}`
	// b's capabilities: ips and portMappings are declared, mac is false.
	confB = `{"cniVersion":"1.0.0","name":"b","plugins":[
		{"type":"bridge","capabilities":{"ips":true,"mac":false}},
		{"type":"portmap","capabilities":{"portMappings":true}}]}`
	confOldPlexus = `{"cniVersion":"1.0.0","name":"old","plugins":[{"type":"plexus","defaultNetwork":"a"}]}`
)

// newNodeConfig is a NodeConfig over fresh temp dirs, with no shim source.
func newNodeConfig(t *testing.T) *controllers.NodeConfig {
	t.Helper()
	root := t.TempDir()
	c := &controllers.NodeConfig{
		ConfDir:    filepath.Join(root, "net.d"),
		BinDir:     filepath.Join(root, "bin"),
		SocketPath: filepath.Join(root, "run", "plexus.sock"),
		StateDir:   filepath.Join(root, "state"),
	}
	for _, d := range []string{c.ConfDir, c.BinDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func conflistPath(c *controllers.NodeConfig) string {
	return filepath.Join(c.ConfDir, controllers.ConfigFileName)
}

func readConflist(t *testing.T, c *controllers.NodeConfig) []byte {
	t.Helper()
	data, err := os.ReadFile(conflistPath(c))
	if err != nil {
		t.Fatalf("reading the node conflist: %v", err)
	}
	return data
}

func stat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: stat err = %v, want it absent", path, err)
	}
}

// plexusEntry is plexus's entry in the node conflist.
type plexusEntry struct {
	Type           string          `json:"type"`
	DefaultNetwork string          `json:"defaultNetwork"`
	SocketPath     string          `json:"socketPath"`
	StateDir       string          `json:"stateDir"`
	Capabilities   map[string]bool `json:"capabilities"`
}

// wrapped parses the node conflist as libcni would and returns its list and
// plexus's entry, checking it wraps the network name of cniVersion version.
func wrapped(t *testing.T, c *controllers.NodeConfig, name, version string) (*libcni.NetworkConfigList, plexusEntry, map[string]interface{}) {
	t.Helper()
	list, err := libcni.NetworkConfFromBytes(readConflist(t, c))
	if err != nil {
		t.Fatalf("node conflist is not a valid conflist: %v", err)
	}
	if list.Name != name || list.CNIVersion != version {
		t.Fatalf("node conflist wraps %q (cniVersion %q), want %q (%q)", list.Name, list.CNIVersion, name, version)
	}
	if len(list.Plugins) != 1 {
		t.Fatalf("node conflist has %d plugins, want 1", len(list.Plugins))
	}
	var e plexusEntry
	var raw map[string]interface{}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &e); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &raw); err != nil {
		t.Fatal(err)
	}
	if e.Type != "plexus" || e.DefaultNetwork != name {
		t.Fatalf("entry type %q defaultNetwork %q, want plexus wrapping %q", e.Type, e.DefaultNetwork, name)
	}
	return list, e, raw
}

func TestNodeConfigDetectionOrder(t *testing.T) {
	c := newNodeConfig(t)
	// 00-broken sorts first of all, then plexus's own file (written here
	// with a foreign type: it is skipped by name), then a stale plexus
	// config skipped by type.
	writeFile(t, filepath.Join(c.ConfDir, "00-broken.conf"), `{"cniVersion":"1.0.0","name":"broken"`)
	writeFile(t, conflistPath(c), `{"cniVersion":"1.0.0","name":"stale","type":"bridge"}`)
	writeFile(t, filepath.Join(c.ConfDir, "01-old-plexus.conflist"), confOldPlexus)
	writeFile(t, filepath.Join(c.ConfDir, "05-a.conf"), confA)
	writeFile(t, filepath.Join(c.ConfDir, "10-b.conflist"), confB)

	for i := 0; i < 2; i++ { // the second pass sees the conflist plexus wrote
		c.Sync(quiet)
		s := c.State()
		if want := filepath.Join(c.ConfDir, "05-a.conf"); s.DefaultFile != want || s.Default == nil || s.Default.List.Name != "a" {
			t.Fatalf("pass %d: default file %q (%+v), want %q", i, s.DefaultFile, s.Default, want)
		}
		if !s.ConfigCurrent || s.ConfigError != "" || s.DefaultError != "" {
			t.Fatalf("pass %d: state %+v, want the conflist current", i, s)
		}
		wrapped(t, c, "a", "0.4.0")
	}

	named := newNodeConfig(t)
	named.ConfDir, named.DefaultNetwork = c.ConfDir, "b"
	for i := 0; i < 2; i++ {
		// The conflist now carries b's name and sorts first: it must
		// not be taken for b.
		named.Sync(quiet)
		if s := named.State(); s.DefaultFile != filepath.Join(c.ConfDir, "10-b.conflist") {
			t.Fatalf("pass %d: DefaultNetwork b: default file %q, want 10-b.conflist (error %q)", i, s.DefaultFile, s.DefaultError)
		}
		wrapped(t, named, "b", "1.0.0")
	}

	own := newNodeConfig(t)
	own.ConfDir, own.DefaultNetwork = c.ConfDir, "old"
	own.Sync(quiet)
	if s := own.State(); s.Default != nil || s.DefaultError == "" || s.ConfigCurrent {
		t.Fatalf("DefaultNetwork naming a plexus config: state %+v, want no default", s)
	}
}

func TestNodeConfigRender(t *testing.T) {
	c := newNodeConfig(t)
	writeFile(t, filepath.Join(c.ConfDir, "10-b.conflist"), confB)
	c.Sync(quiet)
	_, e, _ := wrapped(t, c, "b", "1.0.0")
	if e.SocketPath != c.SocketPath || e.StateDir != c.StateDir {
		t.Errorf("socketPath %q stateDir %q, want %q %q", e.SocketPath, e.StateDir, c.SocketPath, c.StateDir)
	}
	want := map[string]bool{"ips": true, "portMappings": true}
	if len(e.Capabilities) != len(want) || !e.Capabilities["ips"] || !e.Capabilities["portMappings"] {
		t.Errorf("capabilities %v, want %v", e.Capabilities, want)
	}

	noCaps := newNodeConfig(t)
	writeFile(t, filepath.Join(noCaps.ConfDir, "05-a.conf"), confA)
	noCaps.Sync(quiet)
	if _, _, raw := wrapped(t, noCaps, "a", "0.4.0"); raw["capabilities"] != nil {
		t.Errorf("capabilities %v for a network declaring none, want the field absent", raw["capabilities"])
	}
}

func TestNodeConfigWritesOnlyOnChange(t *testing.T) {
	c := newNodeConfig(t)
	def := filepath.Join(c.ConfDir, "05-a.conf")
	writeFile(t, def, confA)
	c.Sync(quiet)
	before, written := stat(t, conflistPath(c)), c.State().ConfigWritten
	content := readConflist(t, c)
	if written.IsZero() {
		t.Fatal("ConfigWritten not set after the first write")
	}

	c.Sync(quiet)
	after := stat(t, conflistPath(c))
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Error("an unchanged conflist was rewritten")
	}
	if got := c.State().ConfigWritten; !got.Equal(written) {
		t.Errorf("ConfigWritten moved from %v to %v without a change", written, got)
	}

	writeFile(t, def, `{"cniVersion":"0.4.0","name":"a","type":"bridge","capabilities":{"mac":true}}`)
	c.Sync(quiet)
	if bytes.Equal(readConflist(t, c), content) {
		t.Fatal("conflist not rewritten after the default network changed")
	}
	if _, e, _ := wrapped(t, c, "a", "0.4.0"); !e.Capabilities["mac"] {
		t.Errorf("capabilities %v, want mac", e.Capabilities)
	}
	if got := c.State().ConfigWritten; got.Before(written) {
		t.Errorf("ConfigWritten went back from %v to %v", written, got)
	}
}

// withShim gives c a shim source, so that Ready can pass.
func withShim(t *testing.T, c *controllers.NodeConfig) string {
	t.Helper()
	c.ShimSource = filepath.Join(t.TempDir(), "plexus-shim")
	writeFile(t, c.ShimSource, "#!/bin/sh\necho v1\n")
	return c.ShimSource
}

func TestNodeConfigKeepsLastWhenDefaultGoes(t *testing.T) {
	c := newNodeConfig(t)
	withShim(t, c)
	def := filepath.Join(c.ConfDir, "05-a.conf")
	writeFile(t, def, confA)
	c.Sync(quiet)
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	content := readConflist(t, c)

	if err := os.Remove(def); err != nil {
		t.Fatal(err)
	}
	c.Sync(quiet)
	if got := readConflist(t, c); !bytes.Equal(got, content) {
		t.Errorf("conflist changed when the default went:\n%s\nwant\n%s", got, content)
	}
	s := c.State()
	if s.ConfigCurrent || s.Default != nil || s.DefaultError == "" || !strings.Contains(s.ConfigError, "keeping the last written") {
		t.Errorf("state %+v, want not current, a default error, and the last file kept", s)
	}
	if err := c.Ready(); err == nil {
		t.Error("Ready passed without a default network")
	}

	writeFile(t, def, confA)
	c.Sync(quiet)
	if s := c.State(); !s.ConfigCurrent || s.DefaultError != "" || s.ConfigError != "" {
		t.Errorf("state %+v after the default came back, want current", s)
	}
	if err := c.Ready(); err != nil {
		t.Errorf("Ready after the default came back: %v", err)
	}
}

func TestNodeConfigWaitsForReadinessIndicator(t *testing.T) {
	c := newNodeConfig(t)
	c.ReadinessIndicator = filepath.Join(t.TempDir(), "sub", "ready")
	writeFile(t, filepath.Join(c.ConfDir, "05-a.conf"), confA)
	c.Sync(quiet)
	mustNotExist(t, conflistPath(c))
	s := c.State()
	if s.ConfigCurrent || !strings.Contains(s.ConfigError, c.ReadinessIndicator) {
		t.Errorf("state %+v, want waiting for %s", s, c.ReadinessIndicator)
	}
	if s.Default == nil {
		t.Error("default network not reported while waiting for the indicator")
	}

	if err := os.MkdirAll(filepath.Dir(c.ReadinessIndicator), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c.ReadinessIndicator, "")
	c.Sync(quiet)
	wrapped(t, c, "a", "0.4.0")
	if s := c.State(); !s.ConfigCurrent {
		t.Errorf("state %+v, want current once the indicator exists", s)
	}
}

func TestNodeConfigWaitsForCanServe(t *testing.T) {
	c := newNodeConfig(t)
	var serving atomic.Bool
	c.CanServe = serving.Load
	writeFile(t, filepath.Join(c.ConfDir, "05-a.conf"), confA)
	c.Sync(quiet)
	mustNotExist(t, conflistPath(c))
	if s := c.State(); s.ConfigCurrent || s.ConfigError == "" {
		t.Errorf("state %+v, want waiting for the server", s)
	}

	serving.Store(true)
	c.Sync(quiet)
	wrapped(t, c, "a", "0.4.0")
	if s := c.State(); !s.ConfigCurrent {
		t.Errorf("state %+v, want current once the server can serve", s)
	}
}

func TestNodeConfigInstallsShim(t *testing.T) {
	c := newNodeConfig(t)
	src := withShim(t, c)
	dst := filepath.Join(c.BinDir, controllers.ShimName)
	writeFile(t, filepath.Join(c.ConfDir, "05-a.conf"), confA)

	checkInstalled := func(want string) os.FileInfo {
		t.Helper()
		c.Sync(quiet)
		if s := c.State(); !s.ShimInstalled || s.ShimError != "" {
			t.Fatalf("state %+v, want the shim installed", s)
		}
		st := stat(t, dst)
		if st.Mode().Perm() != 0o755 || !st.Mode().IsRegular() {
			t.Errorf("shim mode %v, want a regular 0755 file", st.Mode())
		}
		if got, _ := os.ReadFile(dst); string(got) != want {
			t.Errorf("shim content %q, want %q", got, want)
		}
		return st
	}
	first := checkInstalled("#!/bin/sh\necho v1\n")
	if again := checkInstalled("#!/bin/sh\necho v1\n"); !os.SameFile(first, again) {
		t.Error("an unchanged shim was rewritten")
	}
	// Same size, other bytes: the content is compared, not only the size.
	writeFile(t, src, "#!/bin/sh\necho v2\n")
	checkInstalled("#!/bin/sh\necho v2\n")
	writeFile(t, src, "#!/bin/sh\necho version three\n")
	checkInstalled("#!/bin/sh\necho version three\n")
	if err := c.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}

	c.ShimSource = filepath.Join(t.TempDir(), "absent")
	c.Sync(quiet)
	if s := c.State(); s.ShimInstalled || s.ShimError == "" {
		t.Errorf("state %+v with a missing shim source, want a shim error", s)
	}
	if err := c.Ready(); err == nil {
		t.Error("Ready passed with a missing shim source")
	}
}

func TestNodeConfigNoShim(t *testing.T) {
	c := newNodeConfig(t)
	writeFile(t, filepath.Join(c.ConfDir, "05-a.conf"), confA)
	c.Sync(quiet)
	if s := c.State(); s.ShimInstalled || !s.ConfigCurrent {
		t.Errorf("state %+v, want the conflist written and no shim", s)
	}
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), "shim") {
		t.Errorf("Ready = %v, want an error about the shim", err)
	}

	// A shim put there by other means is enough.
	writeFile(t, filepath.Join(c.BinDir, controllers.ShimName), "shim")
	c.Sync(quiet)
	if err := c.Ready(); err != nil {
		t.Errorf("Ready with a shim in place: %v", err)
	}
}

func TestNodeConfigOnChange(t *testing.T) {
	c := newNodeConfig(t)
	var calls atomic.Int32
	c.OnChange = func() { calls.Add(1) }
	def := filepath.Join(c.ConfDir, "05-a.conf")
	writeFile(t, def, confA)

	steps := []struct {
		name   string
		change func()
		want   int32
	}{
		{"first sync", func() {}, 1},
		{"nothing changed", func() {}, 1},
		{"default network changed", func() {
			writeFile(t, def, `{"cniVersion":"0.4.0","name":"a","type":"bridge","capabilities":{"mac":true}}`)
		}, 2},
		{"nothing changed again", func() {}, 2},
		{"default removed", func() {
			if err := os.Remove(def); err != nil {
				t.Fatal(err)
			}
		}, 3},
		{"still removed", func() {}, 3},
	}
	for _, st := range steps {
		st.change()
		c.Sync(quiet)
		if got := calls.Load(); got != st.want {
			t.Fatalf("%s: OnChange called %d times in all, want %d", st.name, got, st.want)
		}
	}
}

// While nothing is written, a changed default network (its plugin types
// are in the node status) is still a change.
func TestNodeConfigOnChangeWhileWaiting(t *testing.T) {
	c := newNodeConfig(t)
	c.ReadinessIndicator = filepath.Join(t.TempDir(), "ready")
	var calls atomic.Int32
	c.OnChange = func() { calls.Add(1) }
	def := filepath.Join(c.ConfDir, "05-a.conf")
	writeFile(t, def, confA)
	c.Sync(quiet)
	c.Sync(quiet)
	if got := calls.Load(); got != 1 {
		t.Fatalf("OnChange called %d times, want 1", got)
	}
	writeFile(t, def, `{"cniVersion":"0.4.0","name":"a","type":"macvlan"}`)
	c.Sync(quiet)
	if got := calls.Load(); got != 2 {
		t.Fatalf("OnChange called %d times after the default network changed, want 2", got)
	}
	if s := c.State(); s.Default == nil || s.Default.List.Plugins[0].Network.Type != "macvlan" {
		t.Errorf("state default %+v, want the macvlan one", s.Default)
	}
}

func TestNodeConfigConcurrentReader(t *testing.T) {
	c := newNodeConfig(t)
	writeFile(t, filepath.Join(c.ConfDir, "05-a.conf"), confA)
	writeFile(t, filepath.Join(c.ConfDir, "10-long.conflist"), `{"cniVersion":"1.0.0","name":"a-network-with-a-much-longer-name","plugins":[
		{"type":"bridge","capabilities":{"ips":true,"mac":true,"bandwidth":true,"portMappings":true}}]}`)

	stop := make(chan struct{})
	var reads atomic.Int64
	var bad []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(conflistPath(c))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			reads.Add(1)
			if err != nil || !json.Valid(data) {
				bad = append(bad, string(data)+" "+errString(err))
			}
		}
	}()
	for i := 0; i < 200; i++ {
		c.DefaultNetwork = "a"
		if i%2 == 1 {
			c.DefaultNetwork = "a-network-with-a-much-longer-name"
		}
		c.Sync(quiet)
		if s := c.State(); !s.ConfigCurrent {
			t.Fatalf("round %d: %+v", i, s)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d reads saw a partial conflist, e.g. %q", len(bad), reads.Load(), bad[0])
	}
	if reads.Load() == 0 {
		t.Fatal("the reader never read the conflist")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// waitWraps polls until the node conflist wraps the network name.
func waitWraps(t *testing.T, c *controllers.NodeConfig, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(conflistPath(c))
		if err == nil {
			if list, err := libcni.NetworkConfFromBytes(data); err == nil && list.Name == name {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node conflist does not wrap %q after 10s: %s (state %+v)", name, data, c.State())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNodeConfigStartWatches(t *testing.T) {
	c := newNodeConfig(t)
	c.Resync = time.Hour // only the watch can drive it
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()

	writeFile(t, filepath.Join(c.ConfDir, "10-b.conflist"), confB)
	waitWraps(t, c, "b")
	writeFile(t, filepath.Join(c.ConfDir, "05-a.conf"), confA)
	waitWraps(t, c, "a")
	if s := c.State(); s.DefaultFile != filepath.Join(c.ConfDir, "05-a.conf") || !s.ConfigCurrent {
		t.Errorf("state %+v, want a current conflist wrapping 05-a.conf", s)
	}
	// Someone edits the conflist in place (the runtime would then call
	// the default network alone): the watch alone puts it back.
	writeFile(t, conflistPath(c), confB)
	waitWraps(t, c, "a")
	if s := c.State(); s.ConfigRestores != 1 || s.ConfigRestoredBecause != "changed" {
		t.Errorf("after an edit in place: restores %d because %q, want 1 because changed", s.ConfigRestores, s.ConfigRestoredBecause)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after its context ended")
	}
}

// A conflist put back after someone else removed or changed it is a
// restore; the first write and a rewrite for a new default network are not.
func TestNodeConfigNotesARestore(t *testing.T) {
	c := newNodeConfig(t)
	var calls atomic.Int32
	c.OnChange = func() { calls.Add(1) }
	def := filepath.Join(c.ConfDir, "05-a.conf")
	writeFile(t, def, confA)
	steps := []struct {
		name    string
		change  func()
		restore int
		because string
	}{
		{"first write", func() {}, 0, ""},
		{"default network changed", func() {
			writeFile(t, def, `{"cniVersion":"0.4.0","name":"a","type":"bridge","capabilities":{"mac":true}}`)
		}, 0, ""},
		{"removed", func() {
			if err := os.Remove(conflistPath(c)); err != nil {
				t.Fatal(err)
			}
		}, 1, "removed"},
		{"nothing", func() {}, 1, "removed"},
		{"changed", func() { writeFile(t, conflistPath(c), confA) }, 2, "changed"},
	}
	for _, st := range steps {
		before := calls.Load()
		st.change()
		c.Sync(quiet)
		s := c.State()
		if s.ConfigRestores != st.restore || s.ConfigRestoredBecause != st.because || s.ConfigRestored.IsZero() != (st.restore == 0) {
			t.Fatalf("%s: restores %d because %q at %v, want %d because %q", st.name, s.ConfigRestores, s.ConfigRestoredBecause, s.ConfigRestored, st.restore, st.because)
		}
		if st.name != "nothing" && calls.Load() == before {
			t.Errorf("%s: OnChange not called", st.name)
		}
		if _, e, _ := wrapped(t, c, "a", "0.4.0"); e.Type != "plexus" {
			t.Fatalf("%s: conflist not plexus's", st.name)
		}
	}
}
