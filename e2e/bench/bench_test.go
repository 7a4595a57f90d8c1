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
}

// The per-call breakdown reads the daemon's histogram alone; if its name
// or help text changed, the probe falls back to the whole registry, which
// perturbs the timed calls.
func TestOpHistogramIsFoundAlone(t *testing.T) {
	if opHistogram() == prometheus.Gatherer(metrics.Registry) {
		t.Fatal("plexus_cni_operation_duration_seconds not found by its exact description: update opHistogram's probe to match plugin/cniserver")
	}
}
