package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/plexus-cni/plexus/cmd/daemon"
	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/e2e/bench/results"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// MemoryOptions size the cluster of daemon_rss_mib.
type MemoryOptions struct {
	Namespaces  int
	Definitions int // spread evenly over the namespaces
	Pods        int // on the daemon's node
	OtherPods   int // on other nodes: the daemon must not cache them
	// Window is how long memory is sampled in each phase; Interval how
	// often.
	Window, Interval time.Duration
	CreateWorker     int
}

// memoryNode is the node of daemon_rss_mib.
const memoryNode = "rss-node"

// rssDaemon is the real plexus-daemon binary, run as a process of its own.
type rssDaemon struct {
	cmd                *exec.Cmd
	done               chan error
	exited             bool
	exitErr            error
	metrics, readyz    string
	networksDir        string
	started, renderedT time.Time // when it started, when it had synced
}

// DaemonMemory measures daemon_rss_mib: the resident memory of the real
// daemon binary, run as its own process against a real API server, once
// it holds a cluster's worth of definitions and a full node of pods. It
// measures the daemon three times: on the empty cluster (the baseline),
// after the objects were created while it ran (grown by watch events),
// and after a restart on the full cluster (grown by one big list). The
// figure is the largest RSS sampled in the last two.
func DaemonMemory(ctx context.Context, cfg Config, o MemoryOptions) ([]results.Result, error) {
	load := Load1()
	dir, err := os.MkdirTemp("", "plexus-bench-rss")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	env, c, args, networksDir, err := memoryCluster(ctx, cfg, dir)
	if env != nil {
		defer func() { _ = env.Stop() }()
	}
	if err != nil {
		return nil, err
	}
	p := map[string]interface{}{"go_env": goEnv()}

	cfg.progress("daemon on the empty cluster")
	d, err := startRSSDaemon(cfg, args, networksDir, "rss-daemon-1.log")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	if p["empty_cluster"], err = d.syncedMemory(ctx, 0, o); err != nil {
		return nil, err
	}
	cfg.progress("creating %d namespaces, %d definitions, %d pods on the node and %d elsewhere", o.Namespaces, o.Definitions, o.Pods, o.OtherPods)
	start := time.Now()
	if err := populate(ctx, c, o); err != nil {
		return nil, err
	}
	p["create_s"] = round3(time.Since(start).Seconds())
	cfg.progress("created in %.1fs; waiting for the daemon to render them", time.Since(start).Seconds())
	grown, err := d.syncedMemory(ctx, o.Definitions, o)
	if err != nil {
		return nil, err
	}
	p["grown_under_daemon"], p["render_all_s"] = grown, round3(d.renderedT.Sub(start).Seconds())
	d.stop()

	cfg.progress("daemon restarted on the full cluster")
	if d, err = startRSSDaemon(cfg, args, networksDir, "rss-daemon-2.log"); err != nil {
		return nil, err
	}
	defer d.stop()
	restarted, err := d.syncedMemory(ctx, o.Definitions, o)
	if err != nil {
		return nil, err
	}
	p["after_restart"], p["restart_sync_s"] = restarted, round3(d.renderedT.Sub(d.started).Seconds())
	p["machine"] = Machine(load)
	return []results.Result{memoryResult(max(grown["rss_max_mib"], restarted["rss_max_mib"]), o, p)}, nil
}

func memoryResult(value float64, o MemoryOptions, p map[string]interface{}) results.Result {
	p["namespaces"], p["definitions"], p["pods_on_node"], p["pods_elsewhere"] = o.Namespaces, o.Definitions, o.Pods, o.OtherPods
	p["daemon"] = "bin/plexus-daemon as its own process, default flags (--resync 30s); VmRSS from /proc/<pid>/status every " +
		o.Interval.String() + " for " + o.Window.String() + " once synced"
	return results.Result{
		Name: "daemon_rss_mib", Value: round3(value), Unit: "MiB", Target: "< 100", Met: results.Ptr(value < 100),
		ComparedTo: "the daemon on the empty cluster (params.empty_cluster); the figure is the maximum over the full cluster, " +
			"both grown under the daemon and after its restart",
		Params: p, Time: time.Now().UTC(),
	}
}

// memoryCluster starts an API server of its own with the node, and
// prepares the daemon's command line; env is returned for stopping even
// when err is set.
func memoryCluster(ctx context.Context, cfg Config, dir string) (*envtest.Environment, client.Client, []string, string, error) {
	crds := filepath.Join(cfg.RepoRoot, "config", "crd")
	env := controllertest.NewEnvironment(cfg.Assets, filepath.Join(crds, "npwg"), filepath.Join(crds, "bases"))
	restCfg, err := env.Start()
	if err != nil {
		return nil, nil, nil, "", fmt.Errorf("starting the API server: %w", err)
	}
	c, err := newClient(restCfg)
	if err != nil {
		return env, nil, nil, "", err
	}
	kubeconfig, err := writeKubeconfig(env, dir)
	if err != nil {
		return env, nil, nil, "", err
	}
	if err := c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: memoryNode}}); err != nil {
		return env, nil, nil, "", err
	}
	args, networksDir, err := rssDaemonArgs(cfg, dir, kubeconfig)
	return env, c, args, networksDir, err
}

// syncedMemory waits until the daemon synced definitions, then measures.
func (d *rssDaemon) syncedMemory(ctx context.Context, definitions int, o MemoryOptions) (map[string]float64, error) {
	if err := d.waitSynced(ctx, definitions); err != nil {
		return nil, err
	}
	return d.measure(ctx, o.Window, o.Interval)
}

func writeKubeconfig(env *envtest.Environment, dir string) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "plexus-bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", err
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}

// rssDaemonArgs prepares a node for the daemon process: a default
// network's conflist and a bin dir of its own.
func rssDaemonArgs(cfg Config, dir, kubeconfig string) ([]string, string, error) {
	confDir, binDir, stateDir := filepath.Join(dir, "net.d"), filepath.Join(dir, "bin"), filepath.Join(dir, "state")
	for _, d := range []string{confDir, binDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, "", err
		}
	}
	entries, err := os.ReadDir(cfg.PluginsDir)
	if err != nil {
		return nil, "", err
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join(cfg.PluginsDir, e.Name()), filepath.Join(binDir, e.Name())); err != nil {
			return nil, "", err
		}
	}
	defList := plugintest.BridgeList("defnet", "1.0.0", "plxrss0", "10.240.0.0/24", filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(confDir, "10-default.conflist"), []byte(defList), 0o644); err != nil {
		return nil, "", err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, "", err
	}
	return []string{
		"--kubeconfig=" + kubeconfig, "--node-name=" + memoryNode,
		"--socket=" + filepath.Join(dir, "run", "plexus.sock"), "--state-dir=" + stateDir,
		"--cni-conf-dir=" + confDir, "--cni-bin-dir=" + binDir, "--shim-source=" + cfg.Shim,
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", ports[0]),
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", ports[1]),
	}, daemon.NetworksDir(stateDir), nil
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func startRSSDaemon(cfg Config, args []string, networksDir, logName string) (*rssDaemon, error) {
	logFile, err := os.Create(filepath.Join(cfg.LogDir, logName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(cfg.Daemon, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	d := &rssDaemon{cmd: cmd, done: make(chan error, 1), networksDir: networksDir, started: time.Now()}
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--metrics-bind-address="); ok {
			d.metrics = "http://" + v + "/metrics"
		}
		if v, ok := strings.CutPrefix(a, "--health-probe-bind-address="); ok {
			d.readyz = "http://" + v + "/readyz"
		}
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		d.done <- cmd.Wait()
		logFile.Close()
	}()
	return d, nil
}

func (d *rssDaemon) stop() {
	if d.exited {
		return
	}
	d.exited = true
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case d.exitErr = <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		d.exitErr = <-d.done
	}
}

// gone reports whether the daemon exited on its own.
func (d *rssDaemon) gone() bool {
	if d.exited {
		return true
	}
	select {
	case d.exitErr = <-d.done:
		d.exited = true
	default:
	}
	return d.exited
}

// waitSynced waits until the daemon is ready and its networks controller
// has reconciled at least definitions objects and has nothing queued; on
// the first run it also waits for that many rendered files.
func (d *rssDaemon) waitSynced(ctx context.Context, definitions int) error {
	err := poll(ctx, 5*time.Minute, func() bool {
		if d.gone() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
		resp, err := http.Get(d.readyz)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		samples, err := Scrape(ctx, d.metrics)
		if err != nil {
			return false
		}
		done, _ := Sum(samples, "controller_runtime_reconcile_total", map[string]string{"controller": "networks"})
		depth, _ := Sum(samples, "workqueue_depth", map[string]string{"name": "networks"})
		if int(done) < definitions || depth > 0 {
			return false
		}
		files, err := os.ReadDir(d.networksDir)
		return err == nil && len(files) >= definitions
	})
	if d.exited {
		return fmt.Errorf("the daemon exited: %v (see its log in the bench folder)", d.exitErr)
	}
	if err != nil {
		return fmt.Errorf("the daemon did not sync %d definitions: %w", definitions, err)
	}
	d.renderedT = time.Now()
	return nil
}

// measure samples the daemon's memory every interval for window: VmRSS
// (the figure is its maximum: what a memory limit must allow), VmHWM (the
// peak since the daemon started) and the Go runtime's own account. The
// window should cover one --resync period, since the daemon does
// periodic work then.
func (d *rssDaemon) measure(ctx context.Context, window, interval time.Duration) (map[string]float64, error) {
	series := map[string][]float64{}
	var last map[string]float64
	for end := time.Now().Add(window); time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(interval):
		}
		m, err := d.sample(ctx)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			series[k] = append(series[k], v)
		}
		last = m
	}
	if last == nil {
		return nil, errors.New("no memory sample taken")
	}
	out := map[string]float64{
		"rss_min_mib":              round3(slices.Min(series["rss"])),
		"peak_rss_since_start_mib": last["peak_rss"],
		"go_sys_mib":               last["go_sys"],
		"goroutines":               last["goroutines"],
		"samples":                  float64(len(series["rss"])),
		"window_s":                 window.Seconds(),
	}
	for _, k := range []string{"rss", "rss_anon", "rss_file", "go_heap_live", "go_heap_inuse"} {
		sum := Summarize(series[k])
		out[k+"_median_mib"], out[k+"_max_mib"] = round3(sum.P50), round3(sum.Max)
	}
	return out, nil
}

// sample reads /proc/<pid>/status and the daemon's metrics once.
func (d *rssDaemon) sample(ctx context.Context) (map[string]float64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	names := map[string]string{"VmRSS": "rss", "VmHWM": "peak_rss", "RssAnon": "rss_anon", "RssFile": "rss_file"}
	for _, line := range strings.Split(string(status), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || names[key] == "" {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		if err != nil {
			return nil, fmt.Errorf("/proc status %s: %w", key, err)
		}
		out[names[key]] = round3(kb / 1024)
	}
	if _, ok := out["rss"]; !ok {
		return nil, errors.New("no VmRSS in /proc status")
	}
	samples, err := Scrape(ctx, d.metrics)
	if err != nil {
		return nil, err
	}
	for metric, key := range map[string]string{
		// Live heap: what the last GC marked; in use: live plus the
		// garbage not collected yet.
		"go_gc_heap_live_bytes":        "go_heap_live",
		"go_memstats_heap_inuse_bytes": "go_heap_inuse",
		"go_memstats_sys_bytes":        "go_sys",
	} {
		if v, ok := Sum(samples, metric, nil); ok {
			out[key] = round3(v / (1 << 20))
		}
	}
	if v, ok := Sum(samples, "go_goroutines", nil); ok {
		out["goroutines"] = v
	}
	return out, nil
}

// populate creates the namespaces, the definitions (typical macvlan
// definitions, each with its own subnet) and the pods, each pod asking
// for three definitions of its namespace.
func populate(ctx context.Context, c client.Client, o MemoryOptions) error {
	err := parallel(o.Namespaces, o.CreateWorker, func(i int) error {
		return c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: rssNamespace(i)}})
	})
	if err != nil {
		return err
	}
	perNS := o.Definitions / o.Namespaces
	err = parallel(o.Definitions, o.CreateWorker, func(i int) error {
		config := fmt.Sprintf(`{"cniVersion": "1.0.0", "type": "macvlan", "master": "eth1", "mode": "bridge", `+
			`"ipam": {"type": "host-local", "subnet": "10.%d.%d.0/24", "routes": [{"dst": "0.0.0.0/0"}]}}`, 64+i/256, i%256)
		return c.Create(ctx, &nadv1.NetworkAttachmentDefinition{
			ObjectMeta: metav1.ObjectMeta{Namespace: rssNamespace(i / perNS), Name: fmt.Sprintf("net-%03d", i%perNS)},
			Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
		})
	})
	if err != nil {
		return err
	}
	return parallel(o.Pods+o.OtherPods, o.CreateWorker, func(i int) error {
		node := memoryNode
		if i >= o.Pods {
			node = fmt.Sprintf("other-node-%d", i%10)
		}
		return c.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: rssNamespace(i % o.Namespaces), Name: fmt.Sprintf("pod-%d", i),
				Labels: map[string]string{"app": "bench", "pod-template-hash": "5d8f7c9b6"},
				Annotations: map[string]string{nadv1.NetworkAttachmentAnnot: fmt.Sprintf("net-%03d, net-%03d@data0, net-%03d",
					i%perNS, (i+1)%perNS, (i+2)%perNS)}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1.0",
				Env: []corev1.EnvVar{{Name: "MODE", Value: "bench"}}}}},
		})
	})
}

func rssNamespace(i int) string { return fmt.Sprintf("rss-%03d", i) }

// goEnv records the Go runtime settings the daemon ran with.
func goEnv() map[string]string {
	out := map[string]string{}
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GOMAXPROCS"} {
		v := os.Getenv(k)
		if v == "" {
			v = "(default)"
		}
		out[k] = v
	}
	return out
}
