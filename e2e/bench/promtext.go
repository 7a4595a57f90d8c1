package bench

import (
	"context"
	"fmt"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Scrape reads a Prometheus text endpoint into its metric families, by
// name.
func Scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return families, nil
}

// Sum adds the values of a counter, gauge or untyped metric over its
// series whose labels include match; false when no series matched.
func Sum(families map[string]*dto.MetricFamily, name string, match map[string]string) (float64, bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
	total, found := 0.0, false
	for _, m := range f.GetMetric() {
		if !hasLabels(m, match) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Untyped != nil:
			total += m.GetUntyped().GetValue()
		default:
			continue
		}
		found = true
	}
	return total, found
}

// HistogramTotal is a histogram summed over series: the observations'
// count and sum, and the cumulative count of each bucket by its upper
// bound.
type HistogramTotal struct {
	Count, Sum float64
	Buckets    map[float64]float64
}

// Histogram adds the series of a histogram metric whose labels include
// match; false when no series matched.
func Histogram(families map[string]*dto.MetricFamily, name string, match map[string]string) (HistogramTotal, bool) {
	out := HistogramTotal{Buckets: map[float64]float64{}}
	found := false
	for _, m := range families[name].GetMetric() {
		h := m.GetHistogram()
		if h == nil || !hasLabels(m, match) {
			continue
		}
		found = true
		out.Count += float64(h.GetSampleCount())
		out.Sum += h.GetSampleSum()
		for _, b := range h.GetBucket() {
			out.Buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
		}
	}
	return out, found
}

func hasLabels(m *dto.Metric, match map[string]string) bool {
	for k, v := range match {
		ok := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
