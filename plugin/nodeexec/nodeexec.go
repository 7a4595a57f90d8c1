// Package nodeexec runs CNI plugins from the plexus daemon's container as
// the container runtime runs them on the node: in the node's root
// filesystem, with the node's PATH. The shim, which runs on the node, does
// not need it.
package nodeexec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
)

// DefaultNodePath is the PATH delegates get on the node when none is
// configured: the usual one of a Linux node's system daemons, where
// iptables, ip and the like are found.
const DefaultNodePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// NodeExec runs delegate plugins as the container runtime on the node runs
// them, from a daemon in a container that has the node's root filesystem
// mounted at Root: each plugin process is chrooted into Root (the daemon
// itself is not), starts in the node's "/", and gets the node's PATH and
// the CNI variables of its call, nothing of the daemon's environment. So a
// delegate finds iptables for portmap, Flannel's subnet.env, Calico's
// kubeconfig or an IPAM dataDir at their node paths, with no mount for
// each. Plugin paths (CNI_PATH, and the paths FindInPath returns) are the
// node's. It implements libcni's invoke.Exec.
type NodeExec struct {
	// Root is where the node's root filesystem is mounted ("/host").
	Root string
	// Path is the node's PATH for the plugins; empty is DefaultNodePath.
	Path string
	version.PluginDecoder
}

// NewCNI is libcni running plugins through a NodeExec: binDirs are the
// node's plugin dirs as the node names them ("/opt/cni/bin"), cacheDir is
// the daemon's own.
func NewCNI(e *NodeExec, binDirs []string, cacheDir string) *CNI {
	return &CNI{CNIConfig: libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, e), exec: e, root: e.Root}
}

// NodeRoot is where the plugins' "/" is, for files they write at node
// paths (delegate.NodeRooted).
func (c *CNI) NodeRoot() string { return c.root }

// CNI is libcni that can also tell whether a plugin is installed, the way
// its exec looks plugins up (delegate.Del skips a plugin that is not).
type CNI struct {
	*libcni.CNIConfig
	exec invoke.Exec
	root string
}

// Has reports whether the plugin of that type is in the CNI's plugin dirs.
func (c *CNI) Has(plugin string) bool {
	_, err := c.exec.FindInPath(plugin, c.Path)
	return err == nil
}

// FindInPath finds a plugin in the node's dirs, resolving every link
// within the node's root as the node would, and returns its node path.
func (e *NodeExec) FindInPath(plugin string, paths []string) (string, error) {
	if plugin == "" || strings.ContainsRune(plugin, '/') {
		return "", fmt.Errorf("invalid plugin name %q", plugin)
	}
	if len(paths) == 0 {
		return "", fmt.Errorf("no plugin dirs to find plugin %q in", plugin)
	}
	root, err := os.Open(e.Root)
	if err != nil {
		return "", fmt.Errorf("the node's root: %w", err)
	}
	defer root.Close()
	for _, dir := range paths {
		p := filepath.Join(dir, plugin)
		if executableIn(root, p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("failed to find plugin %q in path %s on the node (root %s)", plugin, paths, e.Root)
}

// executableIn: path, resolved inside root (an absolute link target is
// the node's, not the daemon's), is a regular file someone may execute.
func executableIn(root *os.File, path string) bool {
	fd, err := unix.Openat2(int(root.Fd()), path, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0
}

// ExecPlugin runs the plugin at its node path, chrooted into the node's
// root, with the call's CNI variables and the node's PATH. A plugin
// replaced while it is exec'd ("text file busy", as an upgrade of the
// plugins does) is tried again for a few seconds, as libcni does. A
// failure comes back as the plugin's own CNI error when it printed one.
func (e *NodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	env := e.environ(environ)
	for attempt := 0; ; attempt++ {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, pluginPath)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: e.Root}
		cmd.Dir = "/"
		cmd.Env = env
		cmd.Stdin = bytes.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err == nil {
			return stdout.Bytes(), nil
		}
		if errors.Is(err, syscall.ETXTBSY) && attempt < 5 {
			time.Sleep(time.Second)
			continue
		}
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
}

// environ keeps the CNI_ variables libcni set for the call and gives the
// node's PATH: a plugin the runtime runs sees the runtime's environment,
// which has nothing of the daemon's container in it.
func (e *NodeExec) environ(environ []string) []string {
	path := e.Path
	if path == "" {
		path = DefaultNodePath
	}
	env := []string{"PATH=" + path}
	for _, kv := range environ {
		if strings.HasPrefix(kv, "CNI_") {
			env = append(env, kv)
		}
	}
	return env
}

// pluginError is what a failed plugin said: the CNI error it printed on
// stdout, else its stderr, else how it ended.
func pluginError(runErr error, stdout, stderr []byte) error {
	if len(stdout) > 0 {
		cniErr := &types.Error{}
		if err := json.Unmarshal(stdout, cniErr); err != nil {
			return &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("plugin failed (%v), and its output %q is not a CNI error: %v", runErr, stdout, err)}
		}
		return cniErr
	}
	if msg := strings.TrimSpace(string(stderr)); msg != "" {
		return &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("plugin failed (%v): %s", runErr, msg)}
	}
	return &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("plugin failed with no message: %v", runErr)}
}
