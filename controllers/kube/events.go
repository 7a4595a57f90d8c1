package kube

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	toolsrecord "k8s.io/client-go/tools/record"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/record"
)

// PodEventsUserAgent ends the user agent of the pod Events writer's
// requests ("<binary>/<version> (...)/pod-events"), so that API server
// audit logs, and plexus's own benchmarks, tell them from the rest.
const PodEventsUserAgent = "pod-events"

// The pod Events writer's own client: its rate limit is apart from the
// manager's, so that Events never delay a network-status patch, and every
// request has a deadline.
const (
	PodEventsQPS     = 10
	PodEventsBurst   = 25
	podEventsTimeout = 10 * time.Second
	// podEventsPerPod is how many Events of one reason a pod gets before
	// they are rate-limited (client-go's spam filter, which refills one
	// per 5 minutes) and before further AddedInterface Events are combined
	// into one (its aggregator; client-go's default is 10): a pod with up
	// to this many interfaces sees one Event per interface.
	podEventsPerPod = 25
)

// PodEvents writes the Events the engine reports on pods (AddedInterface,
// NoNetworkFound) to the API server, off the CNI call's path. It is
// client-go's event machinery (tools/record), as kubelet and Multus use it:
//   - Event hands the Event to the broadcaster's queue (1,000 deep) and
//     returns; it never blocks, and an Event that finds the queue full is
//     dropped and logged, so a slow or absent API server cannot hold or
//     fail an ADD.
//   - One goroutine writes them, through a client of its own (PodEventsQPS,
//     PodEventsBurst, a 10 s deadline per request); an Event the API server
//     does not answer is retried 12 times, 10 s apart, then dropped.
//   - Repeats are folded: the same Event again raises the count of the
//     first (one PATCH, no new object), and each pod gets at most
//     podEventsPerPod Events of one reason before a rate limit of one per 5
//     minutes applies, so a pod whose sandbox is retried for hours costs
//     the API server little.
//
// Events go on the pod as the API server knows it (namespace, name, UID),
// source component "plexus", host the node. Start runs the writer (a
// controller-runtime Runnable); Events before Start or after its context
// ends are dropped.
type PodEvents struct {
	// Config is the daemon's connection to the API server; the writer
	// copies it and sets its own user agent, rate limit and deadline.
	Config   *rest.Config
	NodeName string
	// DropNormal drops Normal Events (AddedInterface), for clusters that
	// want a quiet API server; Warnings are always written.
	DropNormal bool
	// Delay is how long after Event an Event is queued: 0 means
	// DefaultStatusDelay, as for the network-status, so that writing it
	// does not compete with the ADD that reported it for the node's CPUs;
	// a negative value queues it at once.
	Delay time.Duration
	// Log is for Event, which the core calls without a context.
	Log logr.Logger

	recorder atomic.Pointer[toolsrecord.EventRecorder]
}

// Event queues an Event on pod; eventType is corev1.EventTypeNormal or
// EventTypeWarning. It never blocks.
func (p *PodEvents) Event(pod record.PodRef, eventType, reason, message string) {
	if p.DropNormal && eventType == corev1.EventTypeNormal {
		return
	}
	r := p.recorder.Load()
	if r == nil {
		p.Log.V(1).Info("Pod Event dropped: the events writer is not running", "pod", plugin.PodRef(pod), "eventReason", reason)
		return
	}
	ref := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: k8stypes.UID(pod.UID)}
	delay := p.Delay
	if delay == 0 {
		delay = DefaultStatusDelay
	}
	if delay < 0 {
		(*r).Event(ref, eventType, reason, message)
		return
	}
	// A timer, not a goroutine, waits; queueing never blocks.
	time.AfterFunc(delay, func() { (*r).Event(ref, eventType, reason, message) })
}

// Start runs the writer until ctx ends.
func (p *PodEvents) Start(ctx context.Context) error {
	cfg := rest.CopyConfig(p.Config)
	cfg.UserAgent = rest.DefaultKubernetesUserAgent() + "/" + PodEventsUserAgent
	cfg.QPS, cfg.Burst, cfg.Timeout = PodEventsQPS, PodEventsBurst, podEventsTimeout
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("pod events client: %w", err)
	}
	broadcaster := toolsrecord.NewBroadcaster(toolsrecord.WithContext(ctx),
		toolsrecord.WithCorrelatorOptions(toolsrecord.CorrelatorOptions{MaxEvents: podEventsPerPod, BurstSize: podEventsPerPod,
			SpamKeyFunc: spamKey}))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	var recorder toolsrecord.EventRecorder = broadcaster.NewRecorder(clientgoscheme.Scheme,
		corev1.EventSource{Component: "plexus", Host: p.NodeName})
	p.recorder.Store(&recorder)
	<-ctx.Done()
	p.recorder.Store(nil)
	broadcaster.Shutdown()
	return nil
}

// spamKey is client-go's spam filter key (source, involved object) with
// the Event's reason: each reason of a pod has its own budget, so that a
// pod that hot-plugs often does not lose its RemovedInterface Events to
// its AddedInterface ones, nor a failing attach's retries a later success.
func spamKey(e *corev1.Event) string {
	o := e.InvolvedObject
	return strings.Join([]string{e.Source.Component, e.Source.Host, o.Kind, o.Namespace, o.Name, string(o.UID), o.APIVersion, e.Reason}, "")
}

// NeedLeaderElection is false: every node's daemon writes its own pods'
// Events.
func (p *PodEvents) NeedLeaderElection() bool { return false }
