package controllertest

import (
	"net/http"
	"strings"
	"sync"

	"github.com/plexus-cni/plexus/controllers/kube"
)

// APICounter counts HTTP requests to the API server by verb and resource
// ("PATCH pods/status"), leaving out watches, which stay open and carry
// no per-pod cost. The daemon tests and the benchmarks count the API
// requests an ADD or a DEL costs with it.
type APICounter struct {
	mu     sync.Mutex
	counts map[string]int
}

// NewAPICounter is an empty counter.
func NewAPICounter() *APICounter { return &APICounter{counts: map[string]int{}} }

// Wrap is a rest.Config WrapTransport.
func (c *APICounter) Wrap(rt http.RoundTripper) http.RoundTripper {
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

// PodEvents is the resource APICounter names the requests of the daemon's
// pod Events writer by (it has a user agent of its own), apart from the
// node's own Events.
const PodEvents = "pod-events"

// Count is the count of key ("POST pod-events") so far.
func (c *APICounter) Count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[key]
}

// Take returns the counts so far and starts again from zero.
func (c *APICounter) Take() map[string]int {
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

// ForPods keeps the counts made for pods: the node's bookkeeping goes, and
// so do the pod Events writer's requests, which are returned apart.
func ForPods(counts map[string]int) (pods, events map[string]int) {
	pods, events = map[string]int{}, map[string]int{}
	for k, v := range counts {
		switch {
		case strings.HasSuffix(k, " "+PodEvents):
			events[k] = v
		case !Bookkeeping(k):
			pods[k] = v
		}
	}
	return pods, events
}
