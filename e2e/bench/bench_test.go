package bench

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

func TestPercentile(t *testing.T) {
	s := Summarize([]float64{5, 1, 4, 2, 3})
	if s.P50 != 3 || s.Max != 5 || s.Mean != 3 || s.N != 5 {
		t.Errorf("Summarize = %+v", s)
	}
	if got := Percentile([]float64{0, 10}, 0.9); math.Abs(got-9) > 1e-9 {
		t.Errorf("Percentile interpolates: got %v, want 9", got)
	}
}

// Sum reads what the daemon's metrics endpoint serves: counters and
// gauges summed over the series that carry the labels asked for.
func TestSum(t *testing.T) {
	const text = `# TYPE go_goroutines gauge
go_goroutines 75
# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller="networks",result="success"} 7
controller_runtime_reconcile_total{controller="networks",result="error"} 2
controller_runtime_reconcile_total{controller="status",result="success"} 40
untyped_thing{b="q\"uote"} 2.5e+06 1700000000
# TYPE webhook_seconds histogram
webhook_seconds_bucket{name="pods",le="0.005"} 3
webhook_seconds_bucket{name="pods",le="0.025"} 5
webhook_seconds_bucket{name="pods",le="+Inf"} 6
webhook_seconds_sum{name="pods"} 0.5
webhook_seconds_count{name="pods"} 6
webhook_seconds_bucket{name="nads",le="0.005"} 1
webhook_seconds_bucket{name="nads",le="0.025"} 1
webhook_seconds_bucket{name="nads",le="+Inf"} 1
webhook_seconds_sum{name="nads"} 0.001
webhook_seconds_count{name="nads"} 1
`
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
		found bool
	}{
		{"go_goroutines", nil, 75, true},
		{"controller_runtime_reconcile_total", map[string]string{"controller": "networks"}, 9, true},
		{"controller_runtime_reconcile_total", map[string]string{"controller": "networks", "result": "error"}, 2, true},
		{"controller_runtime_reconcile_total", map[string]string{"controller": "hotplug"}, 0, false},
		{"untyped_thing", map[string]string{"b": `q"uote`}, 2.5e6, true},
		{"absent", nil, 0, false},
	} {
		got, found := Sum(families, c.name, c.match)
		if got != c.want || found != c.found {
			t.Errorf("Sum(%s, %v) = %v, %v; want %v, %v", c.name, c.match, got, found, c.want, c.found)
		}
	}
	h, found := Histogram(families, "webhook_seconds", map[string]string{"name": "pods"})
	if !found || h.Count != 6 || h.Sum != 0.5 || h.Buckets[0.005] != 3 || h.Buckets[0.025] != 5 {
		t.Errorf("Histogram(webhook_seconds, pods) = %+v, %v; want 6 observations, sum 0.5, 3 under 5 ms, 5 under 25 ms", h, found)
	}
	if h, found := Histogram(families, "webhook_seconds", nil); !found || h.Count != 7 {
		t.Errorf("Histogram(webhook_seconds) over every series = %+v, %v; want 7 observations", h, found)
	}
	if _, found := Histogram(families, "go_goroutines", nil); found {
		t.Error("Histogram found a histogram in a gauge")
	}
}

// The per-call breakdown reads the daemon's histogram alone; if its name
// or help text changed, the probe falls back to the whole registry, which
// perturbs the timed calls.
func TestOpHistogramIsFoundAlone(t *testing.T) {
	if opHistogram() == prometheus.Gatherer(metrics.Registry) {
		t.Fatal("plexus_cni_operation_duration_seconds not found by its exact description: update opHistogram's probe to match plugin/cniserver")
	}
}
