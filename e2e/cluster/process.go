package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"
)

// The components, in the order Down stops them.
var components = []string{"kubelet", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd", "containerd"}

// launch starts bin as component name in a session of its own (setsid), so
// it outlives the cluster tool and a Ctrl-C in the terminal does not reach
// it. Its output goes to logs/<name>.log; its pid and executable to
// run/<name>.pid, which is all Down needs to stop it.
func (c *Cluster) launch(name, bin string, args ...string) error {
	exe, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	logf, err := os.OpenFile(c.logFile(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "---- %s %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Dir = c.StateDir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The component outlives this tool, so it must not inherit the
	// descriptors this tool inherited: the lock of a `flock <file> make
	// cluster-up` around it would be held for as long as the cluster runs.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("starting %s: marking inherited descriptors close-on-exec: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(c.pidFile(name), []byte(fmt.Sprintf("%d %s\n", pid, exe)), 0o644); err != nil {
		return err
	}
	// Reap it if it dies while this process lives, so Down and the
	// readiness checks never see a zombie as running.
	go func() { _ = cmd.Wait() }()
	return nil
}

func (c *Cluster) pidFile(name string) string { return c.path("run", name+".pid") }

// pidOf returns the pid recorded for component name if that process still
// runs the same executable (a recycled pid is not ours).
func (c *Cluster) pidOf(name string) (int, bool) {
	b, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0, false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, runs(pid, fields[1])
}

// runs reports whether pid is alive (not a zombie) and executes exe.
func runs(pid int, exe string) bool {
	got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	if strings.TrimSuffix(got, " (deleted)") != exe {
		return false
	}
	return !zombie(pid)
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces, the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// stop ends component name: SIGTERM, then SIGKILL after grace.
func (c *Cluster) stop(name string, grace time.Duration) error {
	pid, ok := c.pidOf(name)
	if ok {
		if err := terminate(pid, grace); err != nil {
			return fmt.Errorf("stopping %s (pid %d): %w", name, pid, err)
		}
		c.progress("stopped %s (pid %d)", name, pid)
	}
	if err := os.Remove(c.pidFile(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// terminate sends SIGTERM to pid, waits up to grace for it to go, then
// sends SIGKILL and waits again.
func terminate(pid int, grace time.Duration) error {
	gone := func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return err != nil || zombie(pid)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		deadline := time.Now().Add(grace)
		for time.Now().Before(deadline) {
			if gone() {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		grace = 5 * time.Second
	}
	if !gone() {
		return fmt.Errorf("still running after SIGKILL")
	}
	return nil
}

// waitFor polls check until it returns nil, the context ends or timeout
// passes; the last error says what was still missing.
func waitFor(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		last = check(cctx)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w (last: %v)", what, err, last)
	}
	return nil
}

// alive fails when component name has exited, pointing at its log: a
// readiness wait then stops at once instead of running into its timeout.
func (c *Cluster) alive(name string) error {
	if _, ok := c.pidOf(name); !ok {
		return fmt.Errorf("%s exited; see %s:\n%s", name, c.logFile(name), tail(c.logFile(name), 15))
	}
	return nil
}

// tail returns the last n lines of file.
func tail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// run executes a command and returns its combined output, with the output
// in the error when it fails.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
