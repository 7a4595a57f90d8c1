package plugin_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// BenchmarkThreeNetworks measures what plexus adds to a pod start: a
// 3-network ADD and DEL (bridge+host-local default, macvlan+static,
// macvlan+host-local) through the engine, against the same three conflists
// called directly through libcni, interleaved so both see the same machine.
// It reports p50 and p90 of ADD and DEL, bare and through plexus, and of
// their differences.
func BenchmarkThreeNetworks(b *testing.B) {
	f := newFixture(b, "1.0.0")
	f.addNAD("team", "static-net", f.staticNet("static-net"))
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": `[
		{"name":"static-net","ips":["192.168.77.5/24"]}, {"name":"hl-net"}]`})
	netnsA, netnsB := plugintest.NewNS(b), plugintest.NewNS(b)

	// The bare side: the same three lists, exactly as plexus resolved them.
	if _, err := f.do(f.req("ADD", "probe", netnsA, pod)); err != nil {
		b.Fatal(err)
	}
	rec, err := f.engine.Store.Load("probe")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.do(f.req("DEL", "probe", netnsA, pod)); err != nil {
		b.Fatal(err)
	}
	type bare struct {
		list *libcni.NetworkConfigList
		rt   *libcni.RuntimeConf
	}
	var direct []bare
	for _, a := range rec.Attachments {
		direct = append(direct, bare{mustList(b, a.Config), &libcni.RuntimeConf{
			ContainerID: "bare", NetNS: netnsB.Path(), IfName: a.IfName, Args: a.Args, CapabilityArgs: a.CapabilityArgs}})
	}
	ctx := context.Background()

	var plexusAdd, plexusDel, bareAdd, bareDel []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := f.do(f.req("ADD", "c1", netnsA, pod)); err != nil {
			b.Fatal(err)
		}
		plexusAdd = append(plexusAdd, time.Since(start))
		start = time.Now()
		if _, err := f.do(f.req("DEL", "c1", netnsA, pod)); err != nil {
			b.Fatal(err)
		}
		plexusDel = append(plexusDel, time.Since(start))

		start = time.Now()
		for _, d := range direct {
			if _, err := f.engine.CNI.AddNetworkList(ctx, d.list, d.rt); err != nil {
				b.Fatal(err)
			}
		}
		bareAdd = append(bareAdd, time.Since(start))
		start = time.Now()
		for j := len(direct) - 1; j >= 0; j-- {
			if err := f.engine.CNI.DelNetworkList(ctx, direct[j].list, direct[j].rt); err != nil {
				b.Fatal(err)
			}
		}
		bareDel = append(bareDel, time.Since(start))
	}
	b.StopTimer()
	report(b, "add", plexusAdd)
	report(b, "bare-add", bareAdd)
	report(b, "add-overhead", minus(plexusAdd, bareAdd))
	report(b, "del", plexusDel)
	report(b, "bare-del", bareDel)
	report(b, "del-overhead", minus(plexusDel, bareDel))
}

// minus pairs the interleaved runs: run i of each saw the same machine.
func minus(a, b []time.Duration) []time.Duration {
	d := make([]time.Duration, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	return d
}

func report(b *testing.B, name string, d []time.Duration) {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	pct := func(p float64) float64 { return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), name+"-p50-ms")
	b.ReportMetric(pct(0.9), name+"-p90-ms")
	b.Logf("%s: p50 %.2f ms, p90 %.2f ms over %d", name, pct(0.5), pct(0.9), len(s))
}
