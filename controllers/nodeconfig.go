// Package controllers keeps a node configured for plexus: the node
// conflist that makes the runtime call plexus, the shim in the CNI bin
// dir, the store of rendered network definitions, and the node's
// NodeNetworkStatus.
package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/netconf"
	"github.com/plexus-cni/plexus/plugin/record"
)

// ConfigFileName is plexus's conflist in the node's CNI conf dir. It sorts
// first, so the runtime, which uses the first config, calls plexus.
const ConfigFileName = "00-plexus.conflist"

// ShimName is the shim's file name in the CNI bin dir: the conflist's type.
const ShimName = plugin.PluginType

// NodeConfig keeps the node conflist and the shim in place: on start, on
// every change in the conf dir (and of the readiness indicator file), and
// on a periodic resync. It writes only what changed, atomically.
type NodeConfig struct {
	ConfDir string
	BinDir  string
	// DefaultNetwork names the default network; empty picks the lexically
	// first config that is not plexus's own.
	DefaultNetwork string
	// ReadinessIndicator, if set, is a file that must exist before the
	// conflist is written (the default network's daemon writes it when
	// it is ready).
	ReadinessIndicator string
	SocketPath         string
	StateDir           string
	// MultusCacheDir is Multus's cniDir as the node names it, written into
	// the conflist for the shim's DEL with the daemon down; empty: none.
	MultusCacheDir string
	// ShimSource is the shim binary to install into BinDir; empty installs
	// nothing (the shim is put there by other means).
	ShimSource string
	// SetAsideLeftovers moves leftover meta-plugin configs (their plugin
	// binary gone from BinDir) out of the runtime's way; see syncForeign.
	SetAsideLeftovers bool
	// HasPlugin says whether a plugin type is installed; nil looks in
	// BinDir.
	HasPlugin func(string) bool
	Resync    time.Duration
	// CanServe holds the first write back until CNI calls can be served,
	// so the runtime never calls a plexus that cannot answer.
	CanServe func() bool
	// OnChange is told when the state changed.
	OnChange func()
	// Uninstalled, asked when the daemon stops, says whether plexus was
	// uninstalled (see Owner); if so the conflist is removed, so that the
	// node's default network serves new pods again. Nil keeps it always.
	Uninstalled func(context.Context) (bool, string)
	// OnStop, if set, is told as the daemon stops what became of the
	// node: reason ReasonDaemonStopped (the conflist stays for the next
	// daemon) or ReasonUninstalled, and a message saying what new pods
	// get meanwhile. It shares the stop's few seconds.
	OnStop func(ctx context.Context, reason, message string)

	mu    sync.Mutex
	state NodeState

	// syncMu serialises Sync; shim is the source and installed copy last
	// found equal, so that a resync costs two stats, not two reads of a
	// multi-megabyte binary. written is the conflist content last found
	// or put in place: writing it again means someone else removed or
	// changed the file.
	syncMu  sync.Mutex
	shim    [2]fileStamp
	written []byte
}

// NodeState is what the node config last saw and did.
type NodeState struct {
	// Default is the default network found, nil if none.
	Default     *netconf.Network
	DefaultFile string
	// DefaultError says why no default network was found.
	DefaultError string
	// ConfigWritten is when the conflist's content last changed.
	ConfigWritten time.Time
	// ConfigCurrent: the conflist is in place and wraps Default.
	ConfigCurrent bool
	// ConfigError says why the conflist is missing or stale.
	ConfigError string
	// ConfigRestored is when the conflist was last put back after someone
	// else removed or changed it (ConfigRestoredBecause: "removed" or
	// "changed"); ConfigRestores counts those since the daemon started.
	// Pods that started meanwhile may lack their networks.
	ConfigRestored        time.Time
	ConfigRestoredBecause string
	ConfigRestores        int
	ShimInstalled         bool
	ShimError             string
	// Foreign lists the configs that sort before the conflist, so that
	// the runtime reads one of them instead: plexus is not in effect.
	Foreign []ForeignConfig
	// SetAside lists the last leftover configs set aside (SetAsides
	// counts them all since the daemon started).
	SetAside  []SetAsideFile
	SetAsides int
	// MetaConfigs names the meta-plugins' configs the last sync found
	// (set aside or not): "file (type)".
	MetaConfigs []string
}

// State returns a copy of the current state.
func (c *NodeConfig) State() NodeState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Ready is a readiness check: the conflist and the shim are in place.
func (c *NodeConfig) Ready() error {
	s := c.State()
	switch {
	case !s.ShimInstalled:
		return fmt.Errorf("shim not installed: %s", s.ShimError)
	case !s.ConfigCurrent:
		return fmt.Errorf("node conflist not written: %s", s.ConfigError)
	case len(s.Foreign) > 0:
		return fmt.Errorf("node conflist not in effect: %s", foreignMessage(s.Foreign, c.BinDir))
	}
	return nil
}

// NeedLeaderElection is false: every node configures itself.
func (c *NodeConfig) NeedLeaderElection() bool { return false }

// Start syncs until ctx ends.
func (c *NodeConfig) Start(ctx context.Context) error {
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithName("nodeconfig"))
	if err := os.MkdirAll(c.ConfDir, 0o755); err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(c.ConfDir); err != nil {
		return fmt.Errorf("watching %s: %w", c.ConfDir, err)
	}
	if c.ReadinessIndicator != "" {
		dir := filepath.Dir(c.ReadinessIndicator)
		if err := os.MkdirAll(dir, 0o755); err == nil {
			_ = w.Add(dir)
		}
	}
	resync := c.Resync
	if resync == 0 {
		resync = 30 * time.Second
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	// Until the server can answer, poll quickly rather than wait a resync.
	wait := time.NewTicker(50 * time.Millisecond)
	defer wait.Stop()
	c.Sync(ctx)
	for {
		select {
		case <-ctx.Done():
			c.stop(ctx)
			return nil
		case ev := <-w.Events:
			// Every change to the conflist is looked at, our own rename
			// into place included: a Sync that finds its content in place
			// writes nothing, and an edit in place by someone else is then
			// undone at once rather than at the next resync.
			if ev.Op == fsnotify.Chmod {
				continue
			}
			c.Sync(ctx)
		case err := <-w.Errors:
			ctrl.LoggerFrom(ctx).Error(err, "Watching the CNI conf dir; relying on the periodic resync", "path", c.ConfDir)
		case <-wait.C:
			if c.State().ConfigCurrent {
				wait.Stop()
				continue
			}
			c.Sync(ctx)
		case <-tick.C:
			c.Sync(ctx)
		}
	}
}

// stop removes the conflist if plexus was uninstalled, and keeps it
// otherwise. It has a few seconds: the pod's grace period is short. ctx,
// ended, gives the logger only.
func (c *NodeConfig) stop(ctx context.Context) {
	if c.Uninstalled == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	reason, message := c.stopping(ctx)
	if c.OnStop != nil {
		c.OnStop(ctx, reason, message)
	}
}

// stopping keeps or removes the conflist and says what became of the node.
func (c *NodeConfig) stopping(ctx context.Context) (reason, message string) {
	gone, why := c.Uninstalled(ctx)
	path := filepath.Join(c.ConfDir, ConfigFileName)
	log := ctrl.LoggerFrom(ctx).WithValues("path", path, "reason", why)
	if !gone {
		log.Info("Stopping; the node conflist stays for the next daemon")
		return ReasonDaemonStopped, fmt.Sprintf("the daemon stopped (%s): %s stays for the next daemon; until it serves, "+
			"new pods' sandboxes fail and kubelet retries them", why, ConfigFileName)
	}
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		log.Error(err, "Plexus was uninstalled, but its conflist could not be removed: pods on this node will fail to start until it is")
		return ReasonUninstalled, fmt.Sprintf("plexus was uninstalled from this node (%s), but %s could not be removed (%v): "+
			"new pods fail to start until it is removed by hand", why, path, err)
	}
	log.Info("Plexus was uninstalled: removed the node conflist, so the default network serves new pods directly")
	return ReasonUninstalled, fmt.Sprintf("plexus was uninstalled from this node (%s): %s was removed, "+
		"so new pods get the node's default network alone", why, ConfigFileName)
}

// Sync brings the shim and the conflist up to date once; it logs with
// ctx's logger.
func (c *NodeConfig) Sync(ctx context.Context) {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	log := ctrl.LoggerFrom(ctx)
	next := c.State()
	c.syncShim(&next)
	c.syncForeign(log, &next)
	c.syncConfig(log, &next)
	c.mu.Lock()
	changed := !sameState(c.state, next)
	c.state = next
	c.mu.Unlock()
	if changed {
		log.Info("Node config changed", "default", next.DefaultFile, "defaultError", next.DefaultError,
			"configCurrent", next.ConfigCurrent, "configError", next.ConfigError, "shimInstalled", next.ShimInstalled)
		if c.OnChange != nil {
			c.OnChange()
		}
	}
}

// sameState compares the default network's content too: a rewrite within
// the file system's timestamp granularity leaves ConfigWritten unchanged.
func sameState(a, b NodeState) bool {
	return a.DefaultFile == b.DefaultFile && a.DefaultError == b.DefaultError && a.ConfigWritten.Equal(b.ConfigWritten) &&
		bytes.Equal(defaultBytes(a), defaultBytes(b)) &&
		a.ConfigCurrent == b.ConfigCurrent && a.ConfigError == b.ConfigError && a.ConfigRestores == b.ConfigRestores &&
		a.ShimInstalled == b.ShimInstalled && a.ShimError == b.ShimError &&
		sameForeign(a.Foreign, b.Foreign) && a.SetAsides == b.SetAsides
}

func defaultBytes(s NodeState) []byte {
	if s.Default == nil {
		return nil
	}
	return s.Default.List.Bytes
}

func (c *NodeConfig) syncShim(s *NodeState) {
	dst := filepath.Join(c.BinDir, ShimName)
	if c.ShimSource == "" {
		_, err := os.Stat(dst)
		s.ShimInstalled, s.ShimError = err == nil, errString(err)
		return
	}
	if stamps, err := stampsOf(c.ShimSource, dst); err == nil && stamps == c.shim {
		s.ShimInstalled, s.ShimError = true, ""
		return
	}
	if _, err := InstallShim(c.ShimSource, dst); err != nil {
		s.ShimInstalled, s.ShimError = false, err.Error()
		return
	}
	c.shim, _ = stampsOf(c.ShimSource, dst)
	s.ShimInstalled, s.ShimError = true, ""
}

// fileStamp tells a file's version apart without reading it.
type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func stampsOf(paths ...string) ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		out[i] = fileStamp{size: st.Size(), mtime: st.ModTime()}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			out[i].ino = sys.Ino
		}
	}
	return out, nil
}

func (c *NodeConfig) syncConfig(log logr.Logger, s *NodeState) {
	path := filepath.Join(c.ConfDir, ConfigFileName)
	_, statErr := os.Stat(path)
	onDisk := statErr == nil
	def, file, err := netconf.FindDefault(c.ConfDir, c.DefaultNetwork, isOwn)
	if err != nil {
		// The last good conflist stays: a default network's daemon
		// rewriting its file (an upgrade) must not break the node.
		s.Default, s.DefaultFile, s.DefaultError = nil, "", err.Error()
		if len(s.MetaConfigs) > 0 {
			s.DefaultError += fmt.Sprintf("; meta-plugins' configs are never the default network (%s): "+
				"put the default network's own config in the conf dir (a Multus config carried it in its delegates or clusterNetwork)",
				strings.Join(s.MetaConfigs, ", "))
		}
		s.ConfigCurrent = false
		s.ConfigError = "no default network"
		if onDisk {
			s.ConfigError += "; keeping the last written " + path
		}
		return
	}
	s.Default, s.DefaultFile, s.DefaultError = def, file, ""
	switch {
	case c.ReadinessIndicator != "" && !exists(c.ReadinessIndicator):
		s.ConfigCurrent, s.ConfigError = false, "waiting for the readiness indicator file "+c.ReadinessIndicator
		return
	case c.CanServe != nil && !c.CanServe():
		s.ConfigCurrent, s.ConfigError = false, "waiting for the daemon to serve CNI calls"
		return
	}
	data, err := Render(def, c.SocketPath, c.StateDir, c.MultusCacheDir)
	if err != nil {
		s.ConfigCurrent, s.ConfigError = false, err.Error()
		return
	}
	wrote, err := record.WriteFileIfChanged(path, data, 0o644, true)
	if err != nil {
		s.ConfigCurrent, s.ConfigError = false, fmt.Sprintf("writing %s: %v", path, err)
		return
	}
	if wrote || s.ConfigWritten.IsZero() {
		s.ConfigWritten = modTime(path)
	}
	if wrote && bytes.Equal(data, c.written) {
		c.restored(log, s, path, onDisk)
	}
	c.written = data
	s.ConfigCurrent, s.ConfigError = true, ""
}

// restored notes a conflist put back unchanged: not the first write, and
// not a new default network, so someone else removed or changed the file
// (an uninstall racing a reinstall, a configuration tool, a person). The
// runtime may have started pods without plexus in the meantime.
func (c *NodeConfig) restored(log logr.Logger, s *NodeState, path string, wasOnDisk bool) {
	s.ConfigRestored, s.ConfigRestoredBecause = time.Now(), "removed"
	if wasOnDisk {
		s.ConfigRestoredBecause = "changed"
	}
	s.ConfigRestores++
	log.Info("Restored the node conflist that someone else removed or changed; pods started meanwhile may lack their networks",
		"path", path, "reason", s.ConfigRestoredBecause, "restores", s.ConfigRestores)
}

// isOwn tells the configs that are never the default network from its
// candidates: the file plexus writes (whatever it holds) and any
// meta-plugin's config, plexus's and Multus's among them.
func isOwn(path string, n *netconf.Network) bool {
	return filepath.Base(path) == ConfigFileName || plugin.IsMetaConfig(path, n)
}

// Render is the node conflist wrapping a default network: plexus under the
// default network's name and cniVersion, declaring the default network's
// capabilities so the runtime's runtimeConfig reaches it. It carries the
// default network's whole config too, so that the shim can run that
// network's DEL for a sandbox plexus never attached (one the runtime
// attached before plexus was installed) even when the daemon is down, and
// Multus's cniDir (multusCacheDir, omitted when empty), for the DEL of a
// sandbox Multus attached.
func Render(def *netconf.Network, socketPath, stateDir, multusCacheDir string) ([]byte, error) {
	entry := map[string]interface{}{
		"type":                 plugin.PluginType,
		"defaultNetwork":       def.List.Name,
		"socketPath":           socketPath,
		"stateDir":             stateDir,
		"defaultNetworkConfig": json.RawMessage(def.List.Bytes),
	}
	if multusCacheDir != "" {
		entry["multusCacheDir"] = multusCacheDir
	}
	if caps := def.Capabilities(); len(caps) > 0 {
		entry["capabilities"] = caps
	}
	data, err := json.MarshalIndent(map[string]interface{}{
		"cniVersion": def.List.CNIVersion,
		"name":       def.List.Name,
		"plugins":    []interface{}{entry},
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// InstallShim copies the shim to dst when dst differs, atomically, so the
// runtime never execs a half-written binary. Both files are streamed, never
// held whole in memory.
func InstallShim(src, dst string) (bool, error) {
	same, err := sameContent(src, dst)
	if err != nil {
		return false, fmt.Errorf("reading the shim: %w", err)
	}
	if same {
		return false, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("reading the shim: %w", err)
	}
	defer f.Close()
	// A fresh node may have no CNI bin dir yet.
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, fmt.Errorf("the CNI bin dir: %w", err)
	}
	if err := record.WriteFileAtomicFrom(dst, f, 0o755); err != nil {
		return false, fmt.Errorf("writing %s: %w", dst, err)
	}
	return true, nil
}

// sameContent compares two files chunk by chunk; a missing dst differs.
func sameContent(src, dst string) (bool, error) {
	a, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer a.Close()
	b, err := os.Open(dst)
	if err != nil {
		return false, nil
	}
	defer b.Close()
	sa, err := a.Stat()
	if err != nil {
		return false, err
	}
	if sb, err := b.Stat(); err != nil || sa.Size() != sb.Size() {
		return false, nil
	}
	bufA, bufB := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		n, errA := io.ReadFull(a, bufA)
		m, errB := io.ReadFull(b, bufB)
		if n != m || !bytes.Equal(bufA[:n], bufB[:m]) {
			return false, nil
		}
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return errB == errA, nil
		}
		if errA != nil {
			return false, errA
		}
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func modTime(path string) time.Time {
	if st, err := os.Stat(path); err == nil {
		return st.ModTime()
	}
	return time.Time{}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// pluginTypes names a network's plugins, for status and events.
func pluginTypes(n *netconf.Network) string { return delegate.PluginTypes(n.List) }
