package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/plexus-cni/plexus/e2e/bench/results"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/shimapi"
)

// OverheadOptions bound the overhead figures.
type OverheadOptions struct {
	Pairs  int           // pairs measured, at most
	Warmup int           // pairs run first and not counted
	Budget time.Duration // measuring stops after this, whatever Pairs says
}

// pair is one side's ADD and DEL of a sandbox; for plexus also the
// daemon's own account of each call and its time in the delegates.
type pair struct {
	add, del             time.Duration
	daemonAdd, daemonDel time.Duration // the daemon's own account of the call
	delegAdd, delegDel   time.Duration // the delegates, as the daemon ran them
}

func (p pair) addTimes() [3]time.Duration { return [3]time.Duration{p.add, p.daemonAdd, p.delegAdd} }
func (p pair) delTimes() [3]time.Duration { return [3]time.Duration{p.del, p.daemonDel, p.delegDel} }

// Overhead measures add_overhead_ms and del_overhead_ms: a 3-network ADD
// and DEL through plexus (libcni execs the shim, the shim relays to the
// daemon, the daemon runs the three delegates) against the same three
// conflists run directly by libcni into another netns, interleaved: pair i
// ADDs both sandboxes, then DELs both, plexus first on even i and second
// on odd i, so that both see the same machine and neither gets the warmer
// cache. The figure is the distribution of the per-pair differences. Also
// network_status_latency_ms: from ADD's return to the network-status
// patch being acknowledged.
func Overhead(ctx context.Context, n *Node, pSB, bSB *Sandbox, o OverheadOptions) ([]results.Result, error) {
	load := Load1()
	plexus, bare, took, err := n.pairs(ctx, pSB, bSB, o)
	if err != nil {
		return nil, err
	}
	statusMs := n.takeStatusLatencies()
	floor, err := costFloor(ctx, n, 30)
	if err != nil {
		return nil, err
	}
	machine := Machine(load)
	params := func(times func(pair) [3]time.Duration) map[string]interface{} {
		p := overheadParams(plexus, bare, times)
		p["pairs"], p["warmup_pairs"], p["seconds"] = len(plexus), o.Warmup, round3(took.Seconds())
		p["networks"], p["floor"], p["machine"] = n.Networks, floor, machine
		return p
	}
	add := Summarize(diffs(plexus, bare, func(p pair) time.Duration { return p.add }))
	del := Summarize(diffs(plexus, bare, func(p pair) time.Duration { return p.del }))
	status := Summarize(statusMs)
	now := time.Now().UTC()
	const compared = "the same 3 conflists run directly by libcni into another netns (a runtime without plexus), interleaved pairwise"
	return []results.Result{
		{Name: "add_overhead_ms", Value: round3(add.P50), Unit: "ms", ComparedTo: compared, Params: params(pair.addTimes),
			P50: results.Ptr(round3(add.P50)), P90: results.Ptr(round3(add.P90)),
			Target: "p50 <= 2", Met: results.Ptr(add.P50 <= 2), Time: now},
		{Name: "del_overhead_ms", Value: round3(del.P50), Unit: "ms", ComparedTo: compared, Params: params(pair.delTimes),
			P50: results.Ptr(round3(del.P50)), P90: results.Ptr(round3(del.P90)), Time: now},
		{Name: "network_status_latency_ms", Value: round3(status.P50), Unit: "ms",
			ComparedTo: "ADD's return (the status is queued as ADD returns): time until the API server acknowledged the merge patch",
			Params: map[string]interface{}{"adds": status.N, "mean": round3(status.Mean), "max": round3(status.Max),
				"api_server": "envtest kube-apiserver on loopback, idle but for this run", "machine": machine},
			P50: results.Ptr(round3(status.P50)), P90: results.Ptr(round3(status.P90)), Time: now},
	}, nil
}

// pairs runs the interleaved pairs and returns both sides' timings, pair
// by pair, and how long the measured pairs took.
func (n *Node) pairs(ctx context.Context, pSB, bSB *Sandbox, o OverheadOptions) (plexus, bare []pair, took time.Duration, err error) {
	var start time.Time
	for i := 0; i < o.Warmup+o.Pairs; i++ {
		if i == o.Warmup {
			n.takeStatusLatencies()
			start = time.Now()
		}
		if i >= o.Warmup && time.Since(start) > o.Budget {
			break
		}
		// Both sandboxes are up before either goes, so that each side's
		// DEL comes a while after its ADD, as in a cluster.
		sides := []*side{n.plexusSide(ctx, pSB, i == 0), n.bareSide(ctx, bSB, i == 0)}
		order := slices.Clone(sides)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, s := range order {
			if err := s.add(fmt.Sprintf("ovh-%s%d", s.name, i)); err != nil {
				return nil, nil, 0, err
			}
		}
		for _, s := range order {
			if err := s.del(fmt.Sprintf("ovh-%s%d", s.name, i)); err != nil {
				return nil, nil, 0, err
			}
		}
		if i >= o.Warmup {
			plexus, bare = append(plexus, sides[0].got), append(bare, sides[1].got)
		}
	}
	return plexus, bare, time.Since(start), nil
}

// overheadParams describes both sides of one operation and where
// plexus's time went, per call: the runtime's view minus the daemon's own
// account of the call (its operation-duration histogram) is the shim's
// exec and relay; the daemon's time minus its delegate calls is its own
// work (lock, attachment record, resolution, result).
func overheadParams(plexus, bare []pair, times func(pair) [3]time.Duration) map[string]interface{} {
	part := func(ps []pair, f func(t [3]time.Duration) time.Duration) map[string]interface{} {
		out := make([]float64, len(ps))
		for i, p := range ps {
			out[i] = Millis(f(times(p)))
		}
		return Summarize(out).params()
	}
	total := func(t [3]time.Duration) time.Duration { return t[0] }
	return map[string]interface{}{
		"order":         "pairwise interleaved: both ADDs, then both DELs; plexus first on even pairs, second on odd ones",
		"runtime":       "libcni (as containerd uses it) with a result cache dir of its own on each side",
		"status_writes": "waited for after each plexus ADD, outside the timed calls",
		"plexus_ms":     part(plexus, total),
		"bare_ms":       part(bare, total),
		"breakdown_ms": map[string]interface{}{
			"shim_exec_and_relay":  part(plexus, func(t [3]time.Duration) time.Duration { return t[0] - t[1] }),
			"daemon_own_work":      part(plexus, func(t [3]time.Duration) time.Duration { return t[1] - t[2] }),
			"daemon_total":         part(plexus, func(t [3]time.Duration) time.Duration { return t[1] }),
			"delegates_via_daemon": part(plexus, func(t [3]time.Duration) time.Duration { return t[2] }),
		},
	}
}

// side is one way of attaching a sandbox, timed.
type side struct {
	name     string
	add, del func(id string) error
	got      pair
}

// plexusSide goes through plexus. After an ADD it waits (untimed) until
// the daemon wrote the pod's network-status, so that the patch does not
// run inside the next timed call.
func (n *Node) plexusSide(ctx context.Context, sb *Sandbox, verify bool) *side {
	s := &side{name: "p"}
	s.add = func(id string) error {
		n.Delegates.Take()
		version := n.cachedVersion(ctx, sb)
		var err error
		s.got.add, s.got.daemonAdd, err = timedByDaemon("ADD", func() error { return n.PlexusAdd(ctx, sb, id) })
		if err != nil {
			return err
		}
		s.got.delegAdd, _ = n.Delegates.Take()
		if verify {
			if err := checkLinks(sb); err != nil {
				return fmt.Errorf("after ADD through plexus: %w", err)
			}
		}
		return n.settle(ctx, sb, version)
	}
	s.del = func(id string) error {
		n.Delegates.Take()
		var err error
		s.got.del, s.got.daemonDel, err = timedByDaemon("DEL", func() error { return n.PlexusDel(ctx, sb, id) })
		if err != nil {
			return err
		}
		_, s.got.delegDel = n.Delegates.Take()
		return nil
	}
	return s
}

// bareSide is a runtime without plexus.
func (n *Node) bareSide(ctx context.Context, sb *Sandbox, verify bool) *side {
	s := &side{name: "b"}
	s.add = func(id string) error {
		start := time.Now()
		if err := n.BareAdd(ctx, sb, id); err != nil {
			return err
		}
		s.got.add = time.Since(start)
		if verify {
			if err := checkLinks(sb); err != nil {
				return fmt.Errorf("after the direct ADD: %w", err)
			}
		}
		return nil
	}
	s.del = func(id string) error {
		start := time.Now()
		if err := n.BareDel(ctx, sb, id); err != nil {
			return err
		}
		s.got.del = time.Since(start)
		return nil
	}
	return s
}

// checkLinks makes sure a sandbox got its three interfaces.
func checkLinks(sb *Sandbox) error {
	var names []string
	err := sb.NetNS.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		return err
	}
	slices.Sort(names)
	if want := []string{"eth0", "lo", "net1", "net2"}; !slices.Equal(names, want) {
		return fmt.Errorf("sandbox %s has links %v, want %v", sb.Pod.Name, names, want)
	}
	return nil
}

func diffs(a, b []pair, get func(pair) time.Duration) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = Millis(get(a[i]) - get(b[i]))
	}
	return out
}

// costFloor measures, interleaved, the fixed costs of a call through
// plexus, whatever its delegates do: exec'ing the shim (a VERSION call,
// which needs no daemon) next to exec'ing a reference plugin the same way;
// one request to the daemon's socket for a DEL of an unknown sandbox (no
// delegate runs), straight from this process and through libcni and the
// shim; and one durable atomic write of a record-sized file in the
// daemon's state dir.
func costFloor(ctx context.Context, n *Node, reps int) (map[string]interface{}, error) {
	binDir := n.Daemon.Node.BinDir
	var shim, bridge, relay, viaShim, write []float64
	probe := filepath.Join(n.Daemon.Node.StateDir, "records", ".bench-probe")
	data := bytes.Repeat([]byte("x"), 4096)
	socket := n.Daemon.Server.Socket
	for i := 0; i < reps; i++ {
		for _, c := range []struct {
			plugin string
			into   *[]float64
		}{{"plexus", &shim}, {"bridge", &bridge}} {
			d, err := execVersion(ctx, filepath.Join(binDir, c.plugin))
			if err != nil {
				return nil, err
			}
			*c.into = append(*c.into, d)
		}
		id := fmt.Sprintf("noop-%d", i)
		d, err := timed(func() error { return postNoopDel(ctx, socket, id, n.plexusConfBytes()) })
		if err != nil {
			return nil, err
		}
		relay = append(relay, d)
		rt := &libcni.RuntimeConf{ContainerID: id, IfName: "eth0"}
		if d, err = timed(func() error { return n.viaShim.DelNetworkList(ctx, n.plexus, rt) }); err != nil {
			return nil, err
		}
		viaShim = append(viaShim, d)
		if d, err = timed(func() error { return record.WriteFileAtomic(probe, data, 0o600) }); err != nil {
			return nil, err
		}
		write = append(write, d)
	}
	_ = os.Remove(probe)
	return map[string]interface{}{
		"shim_version_exec_p50_ms":        round3(Summarize(shim).P50),
		"bridge_version_exec_p50_ms":      round3(Summarize(bridge).P50),
		"noop_del_socket_request_p50_ms":  round3(Summarize(relay).P50),
		"noop_del_libcni_via_shim_p50_ms": round3(Summarize(viaShim).P50),
		"durable_4k_write_p50_ms":         round3(Summarize(write).P50),
		"reps":                            reps,
	}, nil
}

func timed(fn func() error) (float64, error) {
	start := time.Now()
	err := fn()
	return Millis(time.Since(start)), err
}

// postNoopDel is the shim's request for a DEL of a sandbox the daemon
// never saw, sent from this process: the relay without the exec.
func postNoopDel(ctx context.Context, socket, id string, config []byte) error {
	body, err := json.Marshal(&shimapi.Request{Command: "DEL", ContainerID: id, IfName: "eth0", Config: config})
	if err != nil {
		return err
	}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plexus"+shimapi.Path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("no-op DEL: %s: %s", resp.Status, out)
	}
	return nil
}

func execVersion(ctx context.Context, path string) (float64, error) {
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = bytes.NewReader([]byte(`{"cniVersion": "1.0.0"}`))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s VERSION: %v: %s", path, err, out)
	}
	return Millis(time.Since(start)), nil
}
