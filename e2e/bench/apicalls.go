package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/cmd/daemon"
	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/e2e/bench/results"
)

// quiet is how long stray requests are waited for after the last call.
const quiet = time.Second

// APIRequests measures api_requests_per_add and api_requests_per_del: the
// requests the daemon makes to the API server for sandboxes whose pods are
// in its cache, counted on its own connection (a wrapping round-tripper)
// over an ADD of every sandbox, then a DEL of every sandbox. The node's
// own bookkeeping (its NodeNetworkStatus, Events about definitions) is
// reported apart. The pod Events writer's requests (its own user agent)
// are event_requests_per_add; the cycle runs again with the daemon
// restarted with --added-interface-events=false, whose total per ADD is
// api_requests_per_add_events_off; the daemon is then restarted as it was
// for the figures that follow.
func APIRequests(ctx context.Context, n *Node, sandboxes []*Sandbox) ([]results.Result, error) {
	load := Load1()
	pods := len(sandboxes)
	interfaces := len(n.direct)
	events := pods * interfaces
	if n.Daemon.Events.DropNormal {
		events = 0 // -added-interface-events=false
	}
	addCounts, delCounts, err := apiCycle(ctx, n, sandboxes, events)
	if err != nil {
		return nil, err
	}
	if err := n.RestartDaemon(ctx, func(o *daemon.Options) { o.AddedInterfaceEvents = false }); err != nil {
		return nil, err
	}
	quietAdd, _, err := apiCycle(ctx, n, sandboxes, 0)
	if err != nil {
		return nil, fmt.Errorf("with --added-interface-events=false: %w", err)
	}
	if err := n.RestartDaemon(ctx, nil); err != nil { // as the node was
		return nil, err
	}

	now, machine := time.Now().UTC(), Machine(load)
	addPod, addNode := split(addCounts)
	addStatus, addEvents := splitEvents(addPod)
	delPod, delNode := split(delCounts)
	reads, writes := readsWrites(addStatus)
	addMet := reads == 0 && len(addStatus) == 1 && addStatus["PATCH pods/status"] == pods
	delTotal := total(delPod)
	quietPod, quietNode := split(quietAdd)
	quietReads, _ := readsWrites(quietPod)
	quietMet := quietReads == 0 && len(quietPod) == 1 && quietPod["PATCH pods/status"] == pods
	events = total(addEvents)
	const compared = "per sandbox, pod in the daemon's cache; counted on the daemon's connection to the API server (watches excluded)"
	return []results.Result{
		{Name: "api_requests_per_add", Value: round3(float64(total(addStatus)) / float64(pods)), Unit: "requests",
			ComparedTo: compared + "; the pod Events writer's requests apart (event_requests_per_add)", Target: "0 reads + 1 patch", Met: results.Ptr(addMet), Time: now,
			Params: map[string]interface{}{"pods": pods, "networks_per_pod": interfaces,
				"reads_per_add": round3(float64(reads) / float64(pods)), "writes_per_add": round3(float64(writes) / float64(pods)),
				"per_add_by_request": perPod(addStatus, pods), "node_bookkeeping_total": addNode, "machine": machine}},
		{Name: "event_requests_per_add", Value: round3(float64(events) / float64(pods)), Unit: "requests",
			ComparedTo: compared + "; the pod Events writer's requests (AddedInterface, one per interface), default settings",
			Target:     fmt.Sprintf("at most 1 per interface (%d)", interfaces), Met: results.Ptr(events <= pods*interfaces), Time: now,
			Params: map[string]interface{}{"pods": pods, "interfaces_per_pod": interfaces, "per_add_by_request": perPod(addEvents, pods),
				"total_per_add": round3(float64(total(addPod)) / float64(pods)), "machine": machine}},
		{Name: "api_requests_per_add_events_off", Value: round3(float64(total(quietPod)) / float64(pods)), Unit: "requests",
			ComparedTo: compared + "; --added-interface-events=false, every request of the ADD counted (Events included)",
			Target:     "0 reads + 1 patch", Met: results.Ptr(quietMet), Time: now,
			Params: map[string]interface{}{"pods": pods, "per_add_by_request": perPod(quietPod, pods),
				"node_bookkeeping_total": quietNode, "machine": machine}},
		{Name: "api_requests_per_del", Value: round3(float64(delTotal) / float64(pods)), Unit: "requests",
			ComparedTo: compared, Target: "0", Met: results.Ptr(delTotal == 0), Time: now,
			Params: map[string]interface{}{"pods": pods, "per_del_by_request": perPod(delPod, pods),
				"node_bookkeeping_total": delNode, "machine": machine}},
	}, nil
}

// apiCycle ADDs every sandbox, waits until the statuses are written and
// the pod Events writer has sent events requests (or a second of quiet),
// then DELs every sandbox, and returns the requests of each half.
func apiCycle(ctx context.Context, n *Node, sandboxes []*Sandbox, events int) (add, del map[string]int, err error) {
	time.Sleep(quiet) // what a restart still sends is not an ADD's
	n.API.Take()
	for i, sb := range sandboxes {
		if err := n.PlexusAdd(ctx, sb, fmt.Sprintf("api-%d", i)); err != nil {
			return nil, nil, err
		}
	}
	if err := poll(ctx, time.Minute, func() bool { return n.Daemon.Status.Pending() == 0 }); err != nil {
		return nil, nil, fmt.Errorf("network-status not written: %w", err)
	}
	// The Events writer is rate-limited (kube.PodEventsQPS).
	if err := poll(ctx, 2*time.Minute, func() bool { return n.API.Count("POST "+controllertest.PodEvents) >= events }); err != nil {
		return nil, nil, fmt.Errorf("pod Events not written: %w", err)
	}
	time.Sleep(quiet)
	add = n.API.Take()
	if err := checkStatuses(ctx, n, sandboxes); err != nil {
		return nil, nil, err
	}
	for i, sb := range sandboxes {
		if err := n.PlexusDel(ctx, sb, fmt.Sprintf("api-%d", i)); err != nil {
			return nil, nil, err
		}
	}
	time.Sleep(quiet)
	return add, n.API.Take(), nil
}

// splitEvents takes the pod Events writer's requests out of counts.
func splitEvents(counts map[string]int) (rest, events map[string]int) {
	rest, events = map[string]int{}, map[string]int{}
	for k, v := range counts {
		if strings.HasSuffix(k, " "+controllertest.PodEvents) {
			events[k] = v
		} else {
			rest[k] = v
		}
	}
	return rest, events
}

// checkStatuses makes sure the patches counted are the real thing: every
// pod's network-status lists its three interfaces.
func checkStatuses(ctx context.Context, n *Node, sandboxes []*Sandbox) error {
	for _, sb := range sandboxes {
		pod := &corev1.Pod{}
		if err := n.Client.Get(ctx, client.ObjectKeyFromObject(sb.Pod), pod); err != nil {
			return err
		}
		var status []nadv1.NetworkStatus
		if err := json.Unmarshal([]byte(pod.Annotations[nadv1.NetworkStatusAnnot]), &status); err != nil || len(status) != len(n.direct) {
			return fmt.Errorf("pod %s: network-status %q, want %d entries", pod.Name, pod.Annotations[nadv1.NetworkStatusAnnot], len(n.direct))
		}
	}
	return nil
}

func split(counts map[string]int) (pod, node map[string]int) {
	pod, node = map[string]int{}, map[string]int{}
	for k, v := range counts {
		if controllertest.Bookkeeping(k) {
			node[k] = v
		} else {
			pod[k] = v
		}
	}
	return pod, node
}

func readsWrites(counts map[string]int) (reads, writes int) {
	for k, v := range counts {
		if strings.HasPrefix(k, "GET ") {
			reads += v
		} else {
			writes += v
		}
	}
	return reads, writes
}

func total(counts map[string]int) int {
	t := 0
	for _, v := range counts {
		t += v
	}
	return t
}

func perPod(counts map[string]int, pods int) map[string]float64 {
	out := map[string]float64{}
	for k, v := range counts {
		out[k] = round3(float64(v) / float64(pods))
	}
	return out
}
