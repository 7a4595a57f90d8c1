package bench

import (
	"context"
	"slices"
	"testing"
)

// The cluster figures make their two kinds of pod alternately, first
// kind first, and report the first argument's p50 over the second's.
func TestInterleavedResult(t *testing.T) {
	var made []string
	kind := func(seconds ...float64) func(context.Context, string) (float64, float64, error) {
		return func(_ context.Context, name string) (float64, float64, error) {
			made = append(made, name)
			s := seconds[0]
			seconds = seconds[1:]
			return s, s + 0.5, nil
		}
	}
	plain := &podKind{summary: "plain", raw: "p", ready: kind(1, 2, 3)}
	multi := &podKind{summary: "multi", raw: "m", ready: kind(2, 4, 6)}
	o := PodReadyOptions{Pods: 3}
	if err := interleave(context.Background(), o, plain, multi); err != nil {
		t.Fatal(err)
	}
	if want := []string{"ready-00", "ready-01", "ready-02", "ready-03", "ready-04", "ready-05"}; !slices.Equal(made, want) {
		t.Errorf("made %q, want %q", made, want)
	}
	if !slices.Equal(multi.exact, []float64{2, 4, 6}) || !slices.Equal(plain.coarse, []float64{1.5, 2.5, 3.5}) {
		t.Errorf("samples: multi %v, plain coarse %v", multi.exact, plain.coarse)
	}
	r := abResult("figure_s", "plain", o, multi, plain, 0.1, map[string]interface{}{"own": "x"})
	if r.Name != "figure_s" || r.Value != 2 || *r.P50 != 4 || r.Params["p50_difference_s"] != 2.0 ||
		r.Params["mean_difference_s"] != 2.0 || r.Params["own"] != "x" || r.Params["pods_per_kind"] != 3 {
		t.Errorf("result %+v", r)
	}
	for _, k := range []string{"multi_s", "plain_s", "raw_m_s", "raw_p_s", "p90_difference_s", "load1_at_end"} {
		if _, ok := r.Params[k]; !ok {
			t.Errorf("no parameter %s in %v", k, r.Params)
		}
	}
}
