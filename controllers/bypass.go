package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	events "k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// ReasonNetworksNotAttached is the reason of the Warning Event on a pod
// that asks for networks but whose sandbox plexus never attached.
const ReasonNetworksNotAttached = "NetworksNotAttached"

// DefaultBypassCheck is how often BypassedPods checks when Every is zero.
const DefaultBypassCheck = 30 * time.Second

// maxSettle bounds how long a pod must look bypassed at two checks in a
// row before it is reported (see BypassedPods.settle).
const maxSettle = 5 * time.Second

// maxShown bounds what one Event message or status entry quotes: network
// names listed, and characters of an annotation that does not parse.
const (
	maxShownNetworks = 20
	maxShownRaw      = 200
)

// BypassedPods finds the pods of this node that ask for networks but whose
// sandbox plexus never attached. A pod that started while plexus was not
// installed, or while the node conflist was absent (a reinstall, a node
// relabelled out of the DaemonSet and back), got the node's default network
// alone from the runtime and runs without its networks; nothing else says
// so. Each such pod gets one Warning Event (once per pod UID while the
// daemon runs) naming what it lacks and how to fix it, and Summary feeds
// the node's status. It is a manager Runnable: it checks once the caches
// have synced, then every Every.
//
// A pod counts when it asks for networks (k8s.v1.cni.cncf.io/networks or
// v1.multus-cni.io/default-network), kubelet reports its sandbox's network
// set up, and no attachment record names its UID. Kubelet reports the
// network only after the runtime's CNI ADD returned, and plexus saves the
// record before its first delegate runs, so an ADD in flight never counts.
// A pod must look bypassed at two checks at least settle apart before it
// is reported, which covers a sandbox being replaced (the old one's DEL
// removed its record, the new one's ADD has not started, kubelet has not
// yet reported the old sandbox gone).
type BypassedPods struct {
	// Pods reads this node's pods: the daemon's pod cache.
	Pods     client.Reader
	NodeName string
	Records  *record.Store
	Recorder events.EventRecorder
	// Every is how often to check; zero is DefaultBypassCheck.
	Every time.Duration
	// OnChange is told when the count or the list changed.
	OnChange func()

	// checkMu serialises Check; suspects (when each pod was first seen
	// bypassed) and reported (the pods that got their Event) are its.
	checkMu  sync.Mutex
	suspects map[k8stypes.UID]time.Time
	reported map[k8stypes.UID]bool

	mu    sync.Mutex
	count int
	list  []v1alpha1.BypassedPod
}

// NeedLeaderElection is false: every node reports its own pods.
func (b *BypassedPods) NeedLeaderElection() bool { return false }

// Start checks until ctx ends: every Every, or after settle while a pod
// waits for its second sighting.
func (b *BypassedPods) Start(ctx context.Context) error {
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithName("bypassed"))
	for {
		wait := b.every()
		if b.Check(ctx) {
			wait = b.settle()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (b *BypassedPods) every() time.Duration {
	if b.Every > 0 {
		return b.Every
	}
	return DefaultBypassCheck
}

// settle is how long a pod must look bypassed before it is reported:
// longer than kubelet takes to report a replaced sandbox gone, and never
// longer than one period.
func (b *BypassedPods) settle() time.Duration { return min(maxSettle, b.every()) }

// Summary returns how many pods are bypassed and the first
// v1alpha1.MaxListed of them, sorted by namespace and name.
func (b *BypassedPods) Summary() (int, []v1alpha1.BypassedPod) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count, slices.Clone(b.list)
}

// Check looks at the node's pods and records once. It reports whether some
// pod looks bypassed but waits for its second sighting.
func (b *BypassedPods) Check(ctx context.Context) bool {
	b.checkMu.Lock()
	defer b.checkMu.Unlock()
	log := ctrl.LoggerFrom(ctx).WithValues("node", b.NodeName)
	pods := &corev1.PodList{}
	if err := b.Pods.List(ctx, pods); err != nil {
		log.Error(err, "Listing the node's pods to find those plexus never attached")
		return false
	}
	recs, err := readRecords(b.Records)
	if err != nil {
		log.Error(err, "Reading the attachment records to find pods plexus never attached")
		return false
	}
	now := time.Now()
	present := map[k8stypes.UID]bool{}
	suspects := map[k8stypes.UID]time.Time{}
	var found []v1alpha1.BypassedPod
	pending := false
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName != b.NodeName {
			continue
		}
		present[p.UID] = true
		req := requestOf(p)
		if req.empty() || !sandboxUp(p) || recs.pods[p.UID] || req.attachedByMultus(p) {
			continue
		}
		since, ok := b.suspects[p.UID]
		if !ok {
			since = now
		}
		suspects[p.UID] = since
		if now.Sub(since) < b.settle() {
			pending = true
			continue
		}
		found = append(found, req.entry(p))
		b.report(log, p, req)
	}
	b.suspects = suspects
	for uid := range b.reported {
		if !present[uid] {
			delete(b.reported, uid)
		}
	}
	b.publish(found)
	return pending
}

// report sends a pod's Event, once per pod UID.
func (b *BypassedPods) report(log logr.Logger, p *corev1.Pod, req request) {
	if b.reported == nil {
		b.reported = map[k8stypes.UID]bool{}
	}
	if b.reported[p.UID] {
		return
	}
	b.reported[p.UID] = true
	b.Recorder.Event(p, corev1.EventTypeWarning, ReasonNetworksNotAttached, req.message())
	log.Info("Pod runs without the networks it asks for: plexus never attached its sandbox; deleting the pod recreates it through plexus",
		"pod", klog.KObj(p), "podUID", p.UID, "networks", req.networks, "defaultNetwork", req.defaultNetwork)
}

// publish keeps the count and the capped, sorted list, and tells OnChange
// when either changed.
func (b *BypassedPods) publish(found []v1alpha1.BypassedPod) {
	sort.Slice(found, func(i, j int) bool {
		if found[i].Namespace != found[j].Namespace {
			return found[i].Namespace < found[j].Namespace
		}
		return found[i].Name < found[j].Name
	})
	count := len(found)
	if len(found) > v1alpha1.MaxListed {
		found = found[:v1alpha1.MaxListed]
	}
	b.mu.Lock()
	changed := count != b.count || !slices.EqualFunc(found, b.list, sameBypassed)
	b.count, b.list = count, found
	b.mu.Unlock()
	if changed && b.OnChange != nil {
		b.OnChange()
	}
}

func sameBypassed(a, b v1alpha1.BypassedPod) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.DefaultNetwork == b.DefaultNetwork && slices.Equal(a.Networks, b.Networks)
}

// sandboxUp: kubelet reports the pod's current sandbox with its network
// set up, which it does only after the runtime's CNI ADD returned. Where
// kubelet does not report PodReadyToStartContainers, a running pod with an
// IP. A pod being deleted is left to its teardown.
func sandboxUp(p *corev1.Pod) bool {
	if p.Spec.HostNetwork || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReadyToStartContainers {
			return c.Status == corev1.ConditionTrue
		}
	}
	return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != ""
}

// request is what a pod asks plexus for in its annotations.
type request struct {
	// networks are "namespace/name" each, or the raw annotation when it
	// does not parse (then networksErr says why).
	networks    []string
	networksErr error
	// defaultNetwork is "namespace/name", or the raw annotation when it
	// does not parse (then defaultErr says why).
	defaultNetwork string
	defaultErr     error
}

func requestOf(p *corev1.Pod) request {
	var r request
	if v := strings.TrimSpace(p.Annotations[selection.NetworksAnnotation]); v != "" {
		sels, err := selection.Parse(v, p.Namespace)
		if err != nil {
			r.networks, r.networksErr = []string{cut(v)}, err
		}
		for _, s := range sels {
			if key := s.Key().String(); !slices.Contains(r.networks, key) {
				r.networks = append(r.networks, key)
			}
		}
	}
	if v := strings.TrimSpace(p.Annotations[selection.DefaultNetworkAnnotation]); v != "" {
		key, err := selection.ParseDefault(v, p.Namespace)
		if err != nil {
			r.defaultNetwork, r.defaultErr = cut(v), err
		} else {
			r.defaultNetwork = key.String()
		}
	}
	return r
}

func (r request) empty() bool { return len(r.networks) == 0 && r.defaultNetwork == "" }

// attachedByMultus tells a pod Multus attached before plexus replaced it
// (it runs with its networks, and plexus tears them down from Multus's
// cache when it is deleted) from one the runtime gave the default network
// alone: Multus wrote its network-status, with an entry for every network
// it asks for. The runtime alone writes no status.
func (r request) attachedByMultus(p *corev1.Pod) bool {
	raw := p.Annotations[nadv1.NetworkStatusAnnot]
	if raw == "" || r.networksErr != nil || r.defaultErr != nil {
		return false
	}
	var status []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(raw), &status); err != nil {
		return false
	}
	has := map[string]bool{}
	for _, s := range status {
		has[s.Name] = true
	}
	for _, n := range r.networks {
		if !has[n] {
			return false
		}
	}
	return r.defaultNetwork == "" || has[r.defaultNetwork]
}

func (r request) entry(p *corev1.Pod) v1alpha1.BypassedPod {
	return v1alpha1.BypassedPod{Namespace: p.Namespace, Name: p.Name, Networks: r.networks, DefaultNetwork: r.defaultNetwork}
}

// message says what the pod lacks, why, and what to do about it.
func (r request) message() string {
	var lacks []string
	switch {
	case r.networksErr != nil:
		lacks = append(lacks, fmt.Sprintf("the networks its annotation %s asks for (%q, which does not parse: %v)",
			selection.NetworksAnnotation, r.networks[0], r.networksErr))
	case len(r.networks) == 1:
		lacks = append(lacks, "network "+r.networks[0])
	case len(r.networks) > 1:
		lacks = append(lacks, "networks "+listNames(r.networks))
	}
	switch {
	case r.defaultErr != nil:
		lacks = append(lacks, fmt.Sprintf("the default network its annotation %s asks for (%q, which does not parse: %v)",
			selection.DefaultNetworkAnnotation, r.defaultNetwork, r.defaultErr))
	case r.defaultNetwork != "":
		lacks = append(lacks, "its default network "+r.defaultNetwork+" (it runs on the node's default network instead)")
	}
	fix := "delete the pod so that it is recreated through plexus"
	if r.networksErr != nil || r.defaultErr != nil {
		fix = "fix the annotation, then " + fix
	}
	return "pod started without plexus (no plexus record of its sandbox: plexus was not installed, or its conflist was absent, when the pod started), so it lacks " +
		strings.Join(lacks, " and ") + "; " + fix
}

func listNames(names []string) string {
	if len(names) <= maxShownNetworks {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxShownNetworks], ", "), len(names)-maxShownNetworks)
}

// cut shortens an annotation quoted in an Event or the status.
func cut(s string) string {
	if len(s) <= maxShownRaw {
		return s
	}
	return strings.ToValidUTF8(s[:maxShownRaw], "") + "..."
}

// recordsSeen is what the node's attachment records say, read in one pass.
type recordsSeen struct {
	// sandboxes counts the records; failed those whose teardown is owed.
	sandboxes, failed int
	// pods are the UIDs of the pods that hold a record.
	pods map[k8stypes.UID]bool
}

// readRecords reads every record once: a directory listing and a read per
// sandbox of the node, cheap at the few hundred a node holds.
func readRecords(s *record.Store) (recordsSeen, error) {
	ids, err := s.IDs()
	if err != nil {
		return recordsSeen{}, err
	}
	seen := recordsSeen{sandboxes: len(ids), pods: map[k8stypes.UID]bool{}}
	for _, id := range ids {
		rec, err := s.Load(id)
		if err != nil {
			continue // removed since listed, or cut short before any delegate ran
		}
		if rec.Pod.UID != "" {
			seen.pods[k8stypes.UID(rec.Pod.UID)] = true
		}
		if rec.Failed != nil {
			seen.failed++
		}
	}
	return seen, nil
}
