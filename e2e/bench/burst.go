package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/plexus-cni/plexus/e2e/bench/results"
)

// Burst measures burst_ratio: every sandbox ADDed, then every sandbox
// DELeted, back to back, through plexus and directly; the figure is the
// ratio of the total wall times. The two sides run in the order plexus,
// direct, direct, plexus, so that a drift of the machine's load during
// the figure weighs on both alike. concurrency is how many calls run at
// once, as a kubelet starting several pods does.
func Burst(ctx context.Context, n *Node, sandboxes []*Sandbox, concurrency int, name string) ([]results.Result, error) {
	load := Load1()
	var plexus, bare []float64
	cpu := map[string]map[string][]float64{}
	for round, viaPlexus := range []bool{true, false, false, true} {
		before := n.cpu()
		took, err := n.burst(ctx, sandboxes, concurrency, viaPlexus, round)
		if err != nil {
			return nil, err
		}
		side := map[bool]string{true: "plexus", false: "direct"}[viaPlexus]
		if cpu[side] == nil {
			cpu[side] = map[string][]float64{}
		}
		for k, v := range n.cpu() {
			cpu[side][k] = append(cpu[side][k], round3(v-before[k]))
		}
		if viaPlexus {
			plexus = append(plexus, took.Seconds())
			// The statuses still queued are written before the other side
			// runs (outside the timing): plexus's work, not the bare side's.
			if err := poll(ctx, time.Minute, func() bool { return n.Daemon.Status.Pending() == 0 }); err != nil {
				return nil, err
			}
		} else {
			bare = append(bare, took.Seconds())
		}
		n.cfg.progress("%s round %d (%s): %.2fs", name, round+1, map[bool]string{true: "plexus", false: "direct"}[viaPlexus], took.Seconds())
	}
	left, err := n.Leftovers(sandboxes)
	if err != nil {
		return nil, err
	}
	if len(left) > 0 {
		return nil, fmt.Errorf("the burst leaked: %v", left)
	}
	ratio := sum(plexus) / sum(bare)
	mode := "sequential"
	if concurrency > 1 {
		mode = fmt.Sprintf("%d calls at once", concurrency)
	}
	return []results.Result{{
		Name: name, Value: round3(ratio), Unit: "ratio", Target: "<= 1.2", Met: results.Ptr(ratio <= 1.2), Time: time.Now().UTC(),
		ComparedTo: "the same sandboxes' 3 conflists ADDed then DELed directly by libcni (a runtime without plexus)",
		Params: map[string]interface{}{
			"sandboxes": len(sandboxes), "networks_per_sandbox": len(n.direct), "concurrency": concurrency, "mode": mode,
			"order":          "plexus, direct, direct, plexus; ratio of the summed totals",
			"plexus_total_s": roundAll(plexus), "direct_total_s": roundAll(bare),
			// Where the CPU went in each round. The API server and etcd run
			// on this machine, so the CPU they spend on the network-status
			// patches is taken from the burst here; on a real node it is
			// spent on the control plane.
			"cpu_s":         cpu,
			"status_writes": "the network-status patches overlap the plexus bursts; those still queued are waited for between rounds, untimed",
			"machine":       Machine(load),
		},
	}}, nil
}

// burst ADDs every sandbox, then DELs every sandbox, and times the whole.
func (n *Node) burst(ctx context.Context, sandboxes []*Sandbox, concurrency int, viaPlexus bool, round int) (time.Duration, error) {
	add, del, side := n.BareAdd, n.BareDel, "b"
	if viaPlexus {
		add, del, side = n.PlexusAdd, n.PlexusDel, "p"
	}
	id := func(i int) string { return fmt.Sprintf("burst-c%d-r%d-%s%d", concurrency, round, side, i) }
	start := time.Now()
	if err := parallel(len(sandboxes), concurrency, func(i int) error { return add(ctx, sandboxes[i], id(i)) }); err != nil {
		return 0, err
	}
	if err := parallel(len(sandboxes), concurrency, func(i int) error { return del(ctx, sandboxes[i], id(i)) }); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func sum(vs []float64) float64 {
	t := 0.0
	for _, v := range vs {
		t += v
	}
	return t
}

func roundAll(vs []float64) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = round3(v)
	}
	return out
}
