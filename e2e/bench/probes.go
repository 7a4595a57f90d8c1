package bench

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/plexus-cni/plexus/controllers/kube"
)

// Counter counts HTTP requests to the API server by verb and resource
// ("PATCH pods/status"), leaving out watches, which stay open and carry
// no per-pod cost.
type Counter struct {
	mu     sync.Mutex
	counts map[string]int
}

// NewCounter is an empty counter.
func NewCounter() *Counter { return &Counter{counts: map[string]int{}} }

// Wrap is a rest.Config WrapTransport.
func (c *Counter) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.URL.Query().Get("watch") != "true" {
			key := r.Method + " " + Resource(r.URL.Path)
			if strings.HasSuffix(r.UserAgent(), "/"+kube.PodEventsUserAgent) {
				key = r.Method + " " + PodEvents
			}
			c.mu.Lock()
			c.counts[key]++
			c.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

// PodEvents is the resource Counter names the requests of the daemon's
// pod Events writer by (it has a user agent of its own), apart from the
// node's own Events.
const PodEvents = "pod-events"

// Count is the count of key so far.
func (c *Counter) Count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[key]
}

// Take returns the counts so far and starts again from zero.
func (c *Counter) Take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = map[string]int{}
	return out
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Resource names what an API path addresses, without names and
// namespaces: /api/v1/namespaces/x/pods/y/status is pods/status,
// /apis/g/v1/nodenetworkstatuses is nodenetworkstatuses.
func Resource(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return path
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	switch {
	case len(parts) == 0:
		return "/"
	case len(parts) >= 3:
		return parts[0] + "/" + parts[2]
	}
	return parts[0]
}

// Bookkeeping tells the node's own requests, which run on their own
// schedule (its NodeNetworkStatus, Events about definitions), from those
// made for a pod.
func Bookkeeping(key string) bool {
	_, resource, _ := strings.Cut(key, " ")
	resource, _, _ = strings.Cut(resource, "/")
	return resource == "nodenetworkstatuses" || resource == "events"
}

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
