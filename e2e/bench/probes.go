package bench

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// TimedCNI is the daemon's libcni with a stopwatch on the delegate calls,
// so that plexus's own time can be told from its delegates'.
type TimedCNI struct {
	libcni.CNI
	mu       sync.Mutex
	add, del time.Duration
}

func (t *TimedCNI) AddNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	start := time.Now()
	res, err := t.CNI.AddNetworkList(ctx, list, rt)
	t.record(&t.add, time.Since(start))
	return res, err
}

func (t *TimedCNI) DelNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	start := time.Now()
	err := t.CNI.DelNetworkList(ctx, list, rt)
	t.record(&t.del, time.Since(start))
	return err
}

func (t *TimedCNI) record(total *time.Duration, d time.Duration) {
	t.mu.Lock()
	*total += d
	t.mu.Unlock()
}

// Take returns the time spent in delegate ADDs and DELs since the last
// call.
func (t *TimedCNI) Take() (add, del time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	add, del = t.add, t.del
	t.add, t.del = 0, 0
	return add, del
}

var histogram struct {
	once     sync.Once
	gatherer prometheus.Gatherer
}

// opHistogram is a gatherer of the daemon's operation histogram alone:
// gathering the whole controller-runtime registry between two timed
// calls would leave hundreds of KiB of garbage, and a GC, in the next one.
// Registering an identical histogram hands back the registered one.
func opHistogram() prometheus.Gatherer {
	histogram.once.Do(func() {
		histogram.gatherer = metrics.Registry // if the probe below does not match
		probe := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "plexus_cni_operation_duration_seconds",
			Help: "Time the daemon took to serve a CNI call, by command and outcome.",
		}, []string{"command", "result"})
		var registered prometheus.AlreadyRegisteredError
		switch err := metrics.Registry.Register(probe); {
		case errors.As(err, &registered):
			reg := prometheus.NewRegistry()
			if reg.Register(registered.ExistingCollector) == nil {
				histogram.gatherer = reg
			}
		case err == nil:
			metrics.Registry.Unregister(probe)
		}
	})
	return histogram.gatherer
}

// served is the daemon's own account of the CNI calls it served, from its
// plexus_cni_operation_duration_seconds histogram: total seconds and
// count, by command.
type served map[string]struct {
	seconds float64
	count   uint64
}

func daemonServed() (served, error) {
	families, err := opHistogram().Gather()
	if err != nil {
		return nil, err
	}
	out := served{}
	for _, f := range families {
		if f.GetName() != "plexus_cni_operation_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			command := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "command" {
					command = l.GetValue()
				}
			}
			s := out[command]
			s.seconds += m.GetHistogram().GetSampleSum()
			s.count += m.GetHistogram().GetSampleCount()
			out[command] = s
		}
	}
	return out, nil
}

// timedByDaemon runs call, a CNI command through plexus, and returns how
// long it took here and how long the daemon says it spent on the command
// (daemonServed before and after).
func timedByDaemon(command string, call func() error) (took, daemon time.Duration, err error) {
	before, err := daemonServed()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := call(); err != nil {
		return 0, 0, err
	}
	took = time.Since(start)
	after, err := daemonServed()
	if err != nil {
		return 0, 0, err
	}
	return took, after.took(before, command), nil
}

// took is the time the daemon spent on a command between two readings.
func (s served) took(before served, command string) time.Duration {
	return time.Duration((s[command].seconds - before[command].seconds) * float64(time.Second))
}

func unmarshalResult(res types.Result, into interface{}) error {
	data, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, into)
}
