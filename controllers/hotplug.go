package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// Hot-plug modes (--hotplug, chart value hotplug.mode).
const (
	// HotplugBuiltin: the daemon's own controller (Hotplug) attaches and
	// detaches what a running pod's networks annotation adds and removes.
	HotplugBuiltin = "builtin"
	// HotplugDelegateAPI: the dynamic networks controller does, through
	// the delegate API plexus serves in its place; the built-in controller
	// does not run.
	HotplugDelegateAPI = "delegate-api"
	// HotplugOff: running pods keep the networks their sandbox got.
	HotplugOff = "off"
)

// HotplugModes lists the valid modes, the default first.
var HotplugModes = []string{HotplugBuiltin, HotplugDelegateAPI, HotplugOff}

// Event reasons of hot-plug, on the pod. AddedInterface is
// plugin.ReasonAddedInterface, as for an ADD.
const (
	// ReasonRemovedInterface (Normal): an attachment was hot-unplugged.
	ReasonRemovedInterface = "RemovedInterface"
	// ReasonHotplugFailed (Warning): an attach or detach failed; it is
	// retried with backoff.
	ReasonHotplugFailed = "HotplugFailed"
	// ReasonHotplugRefused (Warning): the annotation asks for a change
	// hot-plug cannot make (an element without an interface name, a
	// host-network pod, an annotation that does not parse); nothing is
	// retried until the annotation changes.
	ReasonHotplugRefused = "HotplugRefused"
)

// Hotplug backoff: the first retry of a failed attach or detach comes
// after hotplugRetryBase, doubling up to hotplugRetryMax.
const (
	hotplugRetryBase = 500 * time.Millisecond
	hotplugRetryMax  = 5 * time.Minute
	// hotplugAddInFlight is how long to wait before looking again at a
	// sandbox whose ADD has not finished.
	hotplugAddInFlight = time.Second
)

// HotplugEngine is what the hot-plug controller needs of plugin.Engine.
type HotplugEngine interface {
	Sandbox(pod record.PodRef) (*record.Record, error)
	Attach(ctx context.Context, req *plugin.AttachRequest) (*current.Result, error)
	Detach(ctx context.Context, containerID, ifname string, keepStatus bool) error
}

// Hotplug is the built-in hot-plug controller (mode builtin): it watches
// the pods of its node (the daemon's cache holds no others) and, when a
// running pod's k8s.v1.cni.cncf.io/networks annotation differs from what
// its live sandbox's record holds, detaches what was removed and attaches
// what was added, one attachment at a time through the engine (which
// publishes the pod's network-status from the record). See planHotplug for
// how elements and attachments are matched.
//
// It is level-triggered: each reconcile compares the annotation as the
// cache has it now with the record as it is now, so a daemon restart
// between an annotation change and its attach attaches at start, once (the
// engine's attach is idempotent). A pod that is gone or terminating, a
// sandbox not created yet or being replaced (the new sandbox's ADD takes
// the current annotation), or an ADD still running are left alone. A
// failed attach or detach gets a Warning Event (ReasonHotplugFailed) and is
// retried with the controller's backoff.
type Hotplug struct {
	Reader client.Reader // this node's pods: the daemon's cache
	Engine HotplugEngine
	Events plugin.PodEvents
	// DefaultNetworks are the node's --default-networks: attachments of a
	// record written before origins existed that are these, numbered netN,
	// are not the annotation's.
	DefaultNetworks []k8stypes.NamespacedName
	// Activity counts what was added, removed and failed, for the node's
	// NodeNetworkStatus; nil counts nothing.
	Activity *HotplugActivity

	mu      sync.Mutex
	warned  map[k8stypes.UID]map[string]bool
	retries map[k8stypes.UID]*retryState
	// waiting are the pods, by network, whose attach or detach of that
	// network failed or was refused (see podsNaming).
	waiting  map[string]map[k8stypes.NamespacedName]k8stypes.UID
	defaults map[string]bool
}

// SetupWithManager registers the controller for pods: their creation (so
// that every pod is looked at when the daemon starts), a change of their
// networks annotation, and a change of their network-status (which an ADD
// writes, so a sandbox that took an older annotation is looked at again).
func (h *Hotplug) SetupWithManager(mgr ctrl.Manager) error {
	h.defaults = map[string]bool{}
	for _, n := range h.DefaultNetworks {
		h.defaults[n.String()] = true
	}
	return ctrl.NewControllerManagedBy(mgr).Named("hotplug").
		For(&corev1.Pod{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return true },
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, n := e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations()
				return o[selection.NetworksAnnotation] != n[selection.NetworksAnnotation] ||
					o[selection.NetworkStatusAnnotation] != n[selection.NetworkStatusAnnotation]
			},
			DeleteFunc: func(e event.DeleteEvent) bool {
				h.forget(e.Object.GetUID())
				return false
			},
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		// A definition created or changed may be what a refused or failed
		// element waited for.
		Watches(&nadv1.NetworkAttachmentDefinition{}, handler.EnqueueRequestsFromMapFunc(h.podsNaming)).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: 2,
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](
				hotplugRetryBase, hotplugRetryMax),
		}).
		Complete(h)
}

// podsNaming lists the pods whose last attach or detach of the definition
// obj failed or was refused: a new or changed definition may be what they
// wait for. Other pods are not looked at again (a node's daemon sees
// every definition of the cluster created when it starts).
func (h *Hotplug) podsNaming(_ context.Context, obj client.Object) []reconcile.Request {
	network := obj.GetNamespace() + "/" + obj.GetName()
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []reconcile.Request
	for pod := range h.waiting[network] {
		out = append(out, reconcile.Request{NamespacedName: pod})
	}
	return out
}

// wait notes that pod waits for a change of network ("namespace/name").
func (h *Hotplug) wait(pod record.PodRef, network string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiting == nil {
		h.waiting = map[string]map[k8stypes.NamespacedName]k8stypes.UID{}
	}
	if h.waiting[network] == nil {
		h.waiting[network] = map[k8stypes.NamespacedName]k8stypes.UID{}
	}
	h.waiting[network][k8stypes.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}] = k8stypes.UID(pod.UID)
}

// unwait forgets what a pod waited for; the caller holds h.mu.
func (h *Hotplug) unwait(uid k8stypes.UID) {
	for network, pods := range h.waiting {
		for key, u := range pods {
			if u == uid {
				delete(pods, key)
			}
		}
		if len(pods) == 0 {
			delete(h.waiting, network)
		}
	}
}

// HotplugActivity counts a node's hot-plug activity since its daemon
// started, for NodeNetworkStatus.status.hotplug: the built-in controller
// feeds it, and so may the delegate API. Safe for concurrent use; the
// zero value counts, with OnChange nil.
type HotplugActivity struct {
	// Mode is reported as is (--hotplug).
	Mode string
	// OnChange is told after each count (the node status refreshes).
	OnChange func()

	mu sync.Mutex
	st v1alpha1.HotplugStatus
}

// Added counts an attachment hot-plugged.
func (a *HotplugActivity) Added() { a.count(func(st *v1alpha1.HotplugStatus) { st.Added++ }) }

// Removed counts an attachment hot-unplugged.
func (a *HotplugActivity) Removed() { a.count(func(st *v1alpha1.HotplugStatus) { st.Removed++ }) }

// Failed counts a failed attach or detach of interface ifname of network
// ("namespace/name") in pod ("namespace/name") and keeps it as the last
// failure; message is cut to 1024 bytes.
func (a *HotplugActivity) Failed(pod, network, ifname, message string) {
	a.count(func(st *v1alpha1.HotplugStatus) {
		st.Failures++
		st.LastFailure = &v1alpha1.HotplugFailure{Pod: pod, Network: network, Interface: ifname,
			Message: truncate(message, 1024), Time: metav1.NewTime(time.Now().Truncate(time.Second))}
	})
}

func (a *HotplugActivity) count(fn func(*v1alpha1.HotplugStatus)) {
	if a == nil {
		return
	}
	a.mu.Lock()
	fn(&a.st)
	a.mu.Unlock()
	if a.OnChange != nil {
		a.OnChange()
	}
}

// Status returns a copy of the counts, with Mode.
func (a *HotplugActivity) Status() *v1alpha1.HotplugStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.st
	out.Mode = a.Mode
	if out.LastFailure != nil {
		f := *out.LastFailure
		out.LastFailure = &f
	}
	return &out
}

// Reconcile brings one pod's sandbox in line with its networks annotation.
func (h *Hotplug) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithValues("pod", klog.KRef(req.Namespace, req.Name)))
	pod := &corev1.Pod{}
	if err := h.Reader.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil // deleted: its sandbox's DEL takes everything
		}
		return ctrl.Result{}, err
	}
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return ctrl.Result{}, nil
	}
	value := pod.Annotations[selection.NetworksAnnotation]
	ref := record.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
	if pod.Spec.HostNetwork {
		if strings.TrimSpace(value) != "" {
			h.warnOnce(ctx, ref, "host-network", fmt.Sprintf(
				"pod %s/%s runs in the node's network namespace (spec.hostNetwork: true): the networks of its annotation %s cannot be attached "+
					"or hot-plugged; remove the annotation, or run the pod without hostNetwork", pod.Namespace, pod.Name, selection.NetworksAnnotation))
		}
		return ctrl.Result{}, nil
	}
	rec, err := h.Engine.Sandbox(ref)
	if err != nil {
		if errors.Is(err, plugin.ErrNoSandbox) {
			return ctrl.Result{}, nil // no sandbox yet, or being replaced: its ADD takes the annotation
		}
		return ctrl.Result{}, err
	}
	for i := range rec.Attachments {
		if a := &rec.Attachments[i]; !a.Added() && a.Origin != record.OriginHotplug && a.Origin != record.OriginDelegateAPI {
			// The sandbox's ADD is still running (an attach cut short by a
			// daemon restart is the engine's to redo or undo, and not
			// waited for).
			return ctrl.Result{RequeueAfter: hotplugAddInFlight}, nil
		}
	}
	sels, err := selection.Parse(value, pod.Namespace)
	if err != nil {
		h.warnOnce(ctx, ref, "parse:"+value, fmt.Sprintf("pod %s/%s: hot-plug: %v; nothing attached or detached until the annotation %s is fixed",
			pod.Namespace, pod.Name, err, selection.NetworksAnnotation))
		return ctrl.Result{}, nil
	}
	plan := planHotplug(req.NamespacedName, sels, rec, h.defaults)
	for _, r := range plan.Refused {
		h.warnOnce(ctx, ref, "refused:"+r.Message, r.Message)
	}
	failed, blocked := false, false // something to retry; something failed or was refused
	held := map[string]bool{}       // interface names a failed detach still holds
	for i := range plan.Detach {
		a := &plan.Detach[i]
		if err := h.Engine.Detach(ctx, rec.ContainerID, a.IfName, false); err != nil {
			failed = h.failure(ctx, ref, a.Network, a.IfName, "detach", err) || failed
			blocked = true
			held[a.IfName] = true
			continue
		}
		h.event(ref, corev1.EventTypeNormal, ReasonRemovedInterface, fmt.Sprintf("Remove %s from %s", a.IfName, a.Network))
		h.Activity.Removed()
	}
	for i := range plan.Attach {
		sel := &plan.Attach[i]
		if held[sel.Interface] {
			continue // attached once the detach that frees the name succeeds
		}
		res, err := h.Engine.Attach(ctx, &plugin.AttachRequest{ContainerID: rec.ContainerID, Pod: ref, Selection: sel, Origin: record.OriginHotplug})
		if errors.Is(err, plugin.ErrNoSandbox) {
			return ctrl.Result{}, nil // torn down meanwhile: the next sandbox's ADD takes the annotation
		}
		if err != nil {
			failed = h.failure(ctx, ref, sel.Key().String(), sel.Interface, "attach", err) || failed
			blocked = true
			continue
		}
		h.event(ref, corev1.EventTypeNormal, plugin.ReasonAddedInterface, addedMessage(sel, res))
		h.Activity.Added()
	}
	if failed {
		return ctrl.Result{RequeueAfter: h.retryAfter(pod.UID, value)}, nil
	}
	if !blocked {
		h.retried(pod.UID)
	}
	return ctrl.Result{}, nil
}

// retryAfter is the delay before the next try of a pod whose attach or
// detach failed: hotplugRetryBase, doubling with each failure of the same
// annotation up to hotplugRetryMax, and from hotplugRetryBase again once
// the annotation changed (failures of an older annotation do not slow the
// new one down).
func (h *Hotplug) retryAfter(uid k8stypes.UID, annotation string) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.retries == nil {
		h.retries = map[k8stypes.UID]*retryState{}
	}
	r := h.retries[uid]
	if r == nil || r.annotation != annotation {
		r = &retryState{annotation: annotation}
		h.retries[uid] = r
	}
	d := hotplugRetryBase << min(r.failures, 20)
	if d > hotplugRetryMax || d <= 0 {
		d = hotplugRetryMax
	}
	r.failures++
	return d
}

// retried forgets a pod's failures once a reconcile of it had none.
func (h *Hotplug) retried(uid k8stypes.UID) {
	h.mu.Lock()
	delete(h.retries, uid)
	h.unwait(uid)
	h.mu.Unlock()
}

type retryState struct {
	annotation string
	failures   int
}

// addedMessage has the shape of the ADD's AddedInterface Event, "Add
// <ifname> [<cidr> ...] from <network>".
func addedMessage(sel *selection.Selection, res *current.Result) string {
	ips := []string{}
	if res != nil {
		for _, ip := range res.IPs {
			ips = append(ips, ip.Address.String())
		}
	}
	return fmt.Sprintf("Add %s %v from %s", sel.Interface, ips, sel.Key())
}

// failure reports a failed attach or detach and says whether to retry it.
// A request the pod's annotation or a definition must change to fix (the
// engine's refusals: a missing or invalid network, namespace isolation, an
// interface name in use, a bad field) is a HotplugRefused Warning, once,
// and not retried: a change of the pod or of a definition it names starts
// the next try. Anything else (a delegate's failure) is a HotplugFailed
// Warning, counted in NodeNetworkStatus, and retried with backoff.
func (h *Hotplug) failure(ctx context.Context, pod record.PodRef, network, ifname, op string, err error) bool {
	h.wait(pod, network)
	var cniErr *types.Error
	if errors.As(err, &cniErr) && cniErr.Code == types.ErrInvalidNetworkConfig {
		h.warnOnce(ctx, pod, "refused:"+err.Error(), fmt.Sprintf("pod %s/%s: hot-plug %s of network %s (interface %q) refused: %v; fix the annotation %s or the network, and it is tried again",
			pod.Namespace, pod.Name, op, network, ifname, err, selection.NetworksAnnotation))
		return false
	}
	msg := fmt.Sprintf("pod %s/%s: hot-plug %s of network %s (interface %q) failed, retrying with backoff: %v",
		pod.Namespace, pod.Name, op, network, ifname, err)
	h.Activity.Failed(pod.Namespace+"/"+pod.Name, network, ifname, msg)
	h.event(pod, corev1.EventTypeWarning, ReasonHotplugFailed, msg)
	return true
}

func (h *Hotplug) event(pod record.PodRef, eventType, reason, message string) {
	if h.Events != nil {
		h.Events.Event(pod, eventType, reason, message)
	}
}

// warnOnce writes a ReasonHotplugRefused Warning once per pod and key
// while the daemon runs: such a pod is looked at again on every change of
// its status, and the same Warning each time would be noise.
func (h *Hotplug) warnOnce(ctx context.Context, pod record.PodRef, key, message string) {
	h.mu.Lock()
	if h.warned == nil {
		h.warned = map[k8stypes.UID]map[string]bool{}
	}
	uid := k8stypes.UID(pod.UID)
	seen := h.warned[uid]
	if seen == nil {
		seen = map[string]bool{}
		h.warned[uid] = seen
	}
	done := seen[key]
	seen[key] = true
	h.mu.Unlock()
	if !done {
		ctrl.LoggerFrom(ctx).Info("Hot-plug refused", "reason", message)
		h.event(pod, corev1.EventTypeWarning, ReasonHotplugRefused, message)
	}
}

func (h *Hotplug) forget(uid k8stypes.UID) {
	h.mu.Lock()
	delete(h.warned, uid)
	delete(h.retries, uid)
	h.unwait(uid)
	h.mu.Unlock()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
