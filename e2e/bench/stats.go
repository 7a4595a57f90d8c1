package bench

import (
	"math"
	"slices"
	"time"
)

// Summary describes a sample of measurements, in milliseconds.
type Summary struct {
	N             int
	P50, P90, Max float64
	Mean          float64
}

// Summarize sorts a copy of ms and takes its percentiles.
func Summarize(ms []float64) Summary {
	if len(ms) == 0 {
		return Summary{}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return Summary{N: len(s), P50: Percentile(s, 0.5), P90: Percentile(s, 0.9), Max: s[len(s)-1], Mean: sum / float64(len(s))}
}

// Percentile of sorted values, interpolating linearly between the two
// nearest ranks.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	pos := p * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// Millis is d in milliseconds.
func Millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// round3 keeps three decimals, so that results.json stays readable.
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// params of a summary, for a result's parameters.
func (s Summary) params() map[string]interface{} {
	return map[string]interface{}{"n": s.N, "p50": round3(s.P50), "p90": round3(s.P90), "mean": round3(s.Mean), "max": round3(s.Max)}
}
