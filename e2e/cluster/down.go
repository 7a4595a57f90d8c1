package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Down tears the cluster down: pods first (so every CNI DEL runs through
// plexus while it still can), then kubelet, the remaining containers, the
// control plane and containerd; then the mounts, netns, links and files
// the cluster left on the node. It is safe after a failed or half-done Up
// and when nothing runs at all. Errors do not stop it; the state dir is
// kept when one occurred, so a second Down can finish the job.
func (c *Cluster) Down(ctx context.Context) error {
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
			c.progress("down: %v", err)
		}
	}
	_, apiUp := c.pidOf("kube-apiserver")
	_, kubeletUp := c.pidOf("kubelet")
	if apiUp && kubeletUp {
		note(c.deletePods(ctx))
	}
	note(c.stop("kubelet", 15*time.Second))
	if _, ok := c.pidOf("containerd"); ok {
		note(c.removeContainers(ctx))
	}
	for _, name := range components[1:] {
		note(c.stop(name, 15*time.Second))
	}
	note(killShims())
	note(c.unmountAll())
	note(removeNetns())
	note(removeLinks())
	note(c.removeFiles())
	removeCgroups()
	if len(errs) > 0 {
		return fmt.Errorf("%d step(s) of the teardown failed; state kept in %s: %w", len(errs), c.StateDir, errors.Join(errs...))
	}
	// The components' logs outlive the cluster, for a look after a failed run.
	if _, err := os.Stat(c.path("logs")); err == nil {
		_ = os.RemoveAll(c.LastLogsDir())
		if err := os.Rename(c.path("logs"), c.LastLogsDir()); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(c.StateDir); err != nil {
		return err
	}
	c.progress("cluster down (its logs: %s)", c.LastLogsDir())
	return nil
}

// LastLogsDir keeps the logs of the last cluster torn down.
func (c *Cluster) LastLogsDir() string { return c.StateDir + "-logs" }

// deletePods deletes every pod but plexus's with a one-second grace
// period: the API server removes a pod only after kubelet stopped its
// sandbox, so once the pods are gone every CNI DEL has run. Then plexus
// itself is uninstalled the way it was installed.
func (c *Cluster) deletePods(ctx context.Context) error {
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	// Static pods go when their manifests do; their mirror pods come
	// back while the manifests are there.
	if manifests, err := filepath.Glob(filepath.Join(StaticPodDir, "*")); err == nil {
		for _, m := range manifests {
			_ = os.Remove(m)
		}
	}
	pods := cs.CoreV1().Pods(metav1.NamespaceAll)
	workloads := func(ctx context.Context) (int, error) {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name!=plexus"})
		if err != nil {
			return 0, err
		}
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				_ = cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](1)})
			}
		}
		return len(list.Items), nil
	}
	if n, err := workloads(ctx); err != nil {
		return err
	} else if n > 0 {
		c.progress("deleting %d pod(s)", n)
	}
	if err := waitFor(ctx, "pods to be deleted", 90*time.Second, func(ctx context.Context) error {
		n, err := workloads(ctx)
		if err == nil && n > 0 {
			err = fmt.Errorf("%d pod(s) left", n)
		}
		return err
	}); err != nil {
		return err
	}
	if out, err := c.Helm(ctx, "status", Release, "--namespace", PlexusNamespace); err == nil {
		if _, err := c.Helm(ctx, "uninstall", Release, "--namespace", PlexusNamespace); err != nil {
			return err
		}
		c.progress("plexus uninstalled: helm uninstall %s", Release)
	} else if !strings.Contains(out, "not found") {
		return err
	}
	return waitFor(ctx, "the plexus pod to go", 60*time.Second, func(ctx context.Context) error {
		list, err := cs.CoreV1().Pods(PlexusNamespace).List(ctx, metav1.ListOptions{LabelSelector: PlexusSelector})
		if err == nil && len(list.Items) > 0 {
			err = fmt.Errorf("%d plexus pod(s) left", len(list.Items))
		}
		return err
	})
}

// removeContainers kills and removes whatever containers kubelet left
// (after a failed run, or when the API server was already down). What
// counts is the outcome: a task or container that vanished meanwhile, or
// whose shim closed under the call ("ttrpc: closed"), is gone all the same,
// so each pass lists again and only what is still there after a few
// passes is an error.
func (c *Cluster) removeContainers(ctx context.Context) error {
	if err := c.removeAllOf(ctx, "tasks", "rm", "-f"); err != nil {
		return err
	}
	n, err := c.countOf(ctx, "containers")
	if err != nil {
		return err
	}
	if err := c.removeAllOf(ctx, "containers", "rm"); err != nil {
		return err
	}
	if n > 0 {
		c.progress("removed %d container(s) kubelet left", n)
	}
	return nil
}

// removeAllOf runs `ctr <kind> <rm...> <id>` for every listed id until
// none is listed, up to five passes.
func (c *Cluster) removeAllOf(ctx context.Context, kind string, rm ...string) error {
	var last []error
	for pass := 0; pass < 5; pass++ {
		out, err := c.ctr(ctx, kind, "ls", "-q")
		if err != nil {
			return err
		}
		ids := strings.Fields(out)
		if len(ids) == 0 {
			return nil
		}
		last = nil
		for _, id := range ids {
			if _, err := c.ctr(ctx, append(append([]string{kind}, rm...), id)...); err != nil {
				last = append(last, err)
			}
		}
		time.Sleep(time.Duration(pass+1) * 200 * time.Millisecond)
	}
	if len(last) == 0 {
		return fmt.Errorf("%s still listed after five passes of ctr %s %s", kind, kind, strings.Join(rm, " "))
	}
	return fmt.Errorf("%s still there after five passes: %w", kind, errors.Join(last...))
}

func (c *Cluster) countOf(ctx context.Context, kind string) (int, error) {
	out, err := c.ctr(ctx, kind, "ls", "-q")
	return len(strings.Fields(out)), err
}

// killShims ends containerd-shim-runc-v2 processes of the cluster's
// containerd (found by its socket in their arguments) and the container
// processes they still hold, which outlive containerd itself.
func killShims() error {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		args := cmdline(pid)
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" || !hasArg(args, "-address", ContainerdSocket) {
			continue
		}
		for _, child := range childrenOf(pid) {
			if err := terminate(child, 0); err != nil {
				errs = append(errs, fmt.Errorf("container process %d: %w", child, err))
			}
		}
		if err := terminate(pid, 5*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("shim %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func hasArg(args []string, flag, value string) bool {
	for i, a := range args {
		if (a == flag || a == "-"+flag) && i+1 < len(args) && args[i+1] == value {
			return true
		}
		if a == flag+"="+value || a == "-"+flag+"="+value {
			return true
		}
	}
	return false
}

func childrenOf(parent int) []int {
	procs, _ := os.ReadDir("/proc")
	var out []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(parent) {
			out = append(out, pid)
		}
	}
	return out
}

// netnsName is how containerd names pod network namespaces.
var netnsName = regexp.MustCompile(`^cni-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// unmountAll unmounts, deepest first, every mount kubelet, containerd and
// the pods left under the cluster's folders, and the pods' netns mounts.
func (c *Cluster) unmountAll() error {
	var targets []string
	for _, m := range mountPoints() {
		if c.ours(m) {
			targets = append(targets, m)
		}
	}
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	var errs []error
	for _, t := range targets {
		if err := unix.Unmount(t, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			if err := unix.Unmount(t, unix.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
			}
		}
	}
	if len(targets) > 0 {
		c.progress("unmounted %d mount(s) under %s, %s, %s and pod netns", len(targets), KubeletRootDir, c.StateDir, "/run/containerd")
	}
	return errors.Join(errs...)
}

// ours reports whether mount point m is one the cluster made.
func (c *Cluster) ours(m string) bool {
	if filepath.Dir(m) == NetnsDir && netnsName.MatchString(filepath.Base(m)) {
		return true
	}
	dirs := []string{KubeletRootDir, c.StateDir, RuntimeDir, "/run/containerd"}
	// Mount points are real paths: a state dir reached through a link (a
	// worktree's .cache linked to another's) is mounted on under its target.
	if real, err := filepath.EvalSymlinks(c.StateDir); err == nil && real != c.StateDir {
		dirs = append(dirs, real)
	}
	for _, dir := range dirs {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			return true
		}
	}
	return false
}

// mountPoints lists the mount points of this mount namespace.
func mountPoints() []string {
	var out []string
	for _, m := range mountInfo() {
		out = append(out, m.point)
	}
	return out
}

type mount struct {
	point  string
	shared bool
}

// mountInfo reads /proc/self/mountinfo: each mount's point and whether it
// is shared (an optional field "shared:N").
func mountInfo() []mount {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mount
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		m := mount{point: unescapeMount(fields[4])}
		for _, opt := range fields[6:] {
			if opt == "-" {
				break
			}
			m.shared = m.shared || strings.HasPrefix(opt, "shared:")
		}
		out = append(out, m)
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountedUnder reports whether anything is still mounted at or below dir:
// removing dir then would delete through the mount.
func mountedUnder(dir string) bool {
	for _, m := range mountPoints() {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			return true
		}
	}
	return false
}

// removeNetns removes the pod netns files containerd left.
func removeNetns() error {
	entries, err := os.ReadDir(NetnsDir)
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range entries {
		if netnsName.MatchString(e.Name()) {
			if err := os.Remove(filepath.Join(NetnsDir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeLinks deletes the default network's bridge and every link named
// like the cluster's veths and bridges (plxe2e-*).
func removeLinks() error {
	links, err := linkList()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if name == DefaultBridge || strings.HasPrefix(name, "plxe2e") {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("link %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// linkList lists the node's links. The kernel interrupts a dump when links
// change under it, as those of the containers just removed do while their
// network namespaces go: it is then dumped again.
func linkList() ([]netlink.Link, error) {
	for try := 1; ; try++ {
		links, err := netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == 10 {
			return links, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeFiles removes what Up installed on the node, the folders it
// created, and plexus's and kubelet's state.
func (c *Cluster) removeFiles() error {
	files := append([]string{DefaultConflist, PlexusConflist, filepath.Join(CNIBinDir, "plexus")}, c.readLines("installed")...)
	var errs []error
	for _, f := range files {
		if mountedUnder(f) {
			errs = append(errs, fmt.Errorf("not removing %s: something is still mounted under it", f))
			continue
		}
		if err := os.RemoveAll(f); err != nil {
			errs = append(errs, err)
		}
	}
	dirs := append([]string{KubeletRootDir, PlexusStateDir, "/run/plexus", RuntimeDir,
		filepath.Join(HostLocalDir, DefaultNetwork)}, c.readLines("created")...)
	for _, d := range dirs {
		if d == rootPropagationMarker {
			if err := unix.Mount("", "/", "none", unix.MS_PRIVATE, ""); err != nil {
				errs = append(errs, fmt.Errorf("making / private again: %w", err))
			}
			continue
		}
		if mountedUnder(d) {
			errs = append(errs, fmt.Errorf("not removing %s: something is still mounted under it", d))
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the kubepods cgroup trees kubelet made (cgroupfs
// driver, cgroup v1: one per controller), deepest first. rmdir only
// succeeds on an empty cgroup, so a live process is never affected.
func removeCgroups() {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = unix.Rmdir(dirs[i])
		}
	}
}
