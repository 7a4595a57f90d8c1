package controllers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	events "k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/plugin/record"
)

// statusResync refreshes what changes without an event (the number of
// attachments) at most this often: an ADD must not cost a status write.
const statusResync = 30 * time.Second

// StatusReconciler keeps this node's NodeNetworkStatus: created for the
// node, owned by its Node, its status written only when it changed.
type StatusReconciler struct {
	Client client.Client
	// Live reads the Node once, uncached: a cached read would start a
	// watch on every Node of the cluster, which the daemon has no use for
	// (nor the RBAC).
	Live     client.Reader
	NodeName string
	Node     *NodeConfig
	Networks *NetworkReconciler
	Records  *record.Store
	// Bypassed, if set, gives the pods plexus never attached.
	Bypassed *BypassedPods
	// Hotplug, if set, gives the node's hot-plug activity.
	Hotplug *HotplugActivity
	// Recorder sends the Event of a restored node conflist, on the
	// node's NodeNetworkStatus.
	Recorder events.EventRecorder
	// Serving reports whether the CNI server answers calls.
	Serving func() error
	// HostPaths shows the paths in the status as the node sees them.
	HostPaths HostPaths
	// Heartbeat is how often, at the least, status.lastHeartbeatTime is
	// refreshed while nothing else changes; v1alpha1.HeartbeatPeriod when
	// zero.
	Heartbeat time.Duration

	trigger chan event.GenericEvent
	// writing is held by whoever writes the status, Reconcile or
	// Stopped: once the daemon stopped, no late reconcile overwrites what
	// Stopped wrote. A one-slot channel rather than a mutex, so that
	// Stopped gives up when its few seconds are over (a reconcile may be
	// waiting on an API server that does not answer).
	writing chan struct{}
	stopped atomic.Bool
	// restoresReported is the node config's restore count last sent as
	// an Event; only Reconcile, which the controller never runs
	// concurrently, touches it.
	restoresReported int
	// setAsidesReported and foreignReported are the node config's
	// set-aside count and foreign configs' message last sent as Events.
	setAsidesReported int
	foreignReported   string
	// binDir is the bin dir's listing as last read, and the dir's
	// modification time then: a status refresh lists the dir again only
	// when a file was added, removed or renamed in it since.
	binDir       time.Time
	binDirListed []string
}

// Poke asks for a status refresh; it never blocks.
func (r *StatusReconciler) Poke() {
	select {
	case r.trigger <- event.GenericEvent{Object: &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: r.NodeName}}}:
	default: // a refresh is already queued
	}
}

// SetupWithManager registers the reconciler: it watches its own node's
// object and is poked by the node config and the network reconciler.
func (r *StatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.trigger = make(chan event.GenericEvent, 1)
	r.writing = make(chan struct{}, 1)
	mine := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == r.NodeName })
	return ctrl.NewControllerManagedBy(mgr).Named("nodenetworkstatus").
		For(&v1alpha1.NodeNetworkStatus{}, builder.WithPredicates(mine)).
		WatchesRawSource(source.Channel(r.trigger, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// Reconcile writes the node's status if it changed.
func (r *StatusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Name != r.NodeName {
		return ctrl.Result{}, nil
	}
	if r.stopped.Load() {
		return ctrl.Result{}, nil
	}
	select {
	case r.writing <- struct{}{}:
		defer func() { <-r.writing }()
	case <-ctx.Done():
		return ctrl.Result{}, ctx.Err()
	}
	if r.stopped.Load() {
		return ctrl.Result{}, nil
	}
	nns := &v1alpha1.NodeNetworkStatus{}
	err := r.Client.Get(ctx, req.NamespacedName, nns)
	if apierrors.IsNotFound(err) {
		if nns, err = r.create(ctx); err != nil {
			return ctrl.Result{}, err
		}
	} else if err != nil {
		return ctrl.Result{}, err
	}
	next := nns.DeepCopy()
	r.fill(&next.Status)
	now := time.Now()
	if r.heartbeatDue(next.Status.LastHeartbeatTime, now) || !equality.Semantic.DeepEqual(nns.Status, next.Status) {
		next.Status.LastHeartbeatTime = heartbeat(now)
		if err := r.Client.Status().Update(ctx, next); err != nil {
			return ctrl.Result{}, err
		}
	}
	r.reportRestore(next)
	r.reportForeign(next)
	// Back when the next heartbeat is due, but not sooner than a second
	// (heartbeats are whole seconds) nor later than the resync.
	return ctrl.Result{RequeueAfter: min(statusResync, max(time.Second, time.Until(next.Status.LastHeartbeatTime.Add(r.heartbeatPeriod()))))}, nil
}

func (r *StatusReconciler) heartbeatPeriod() time.Duration {
	if r.Heartbeat > 0 {
		return r.Heartbeat
	}
	return v1alpha1.HeartbeatPeriod
}

// heartbeatDue says whether the last heartbeat is a period old, or more.
// A heartbeat from the future (the node's clock set back) is due too.
func (r *StatusReconciler) heartbeatDue(last *metav1.Time, now time.Time) bool {
	return last == nil || now.Sub(last.Time) >= r.heartbeatPeriod() || last.After(now.Add(time.Second))
}

// heartbeat is a lastHeartbeatTime: whole seconds, as the API server
// keeps times.
func heartbeat(now time.Time) *metav1.Time {
	t := metav1.NewTime(now.Truncate(time.Second))
	return &t
}

// Reasons of the Ready condition a stopping daemon leaves on its node's
// NodeNetworkStatus: ReasonDaemonStopped for a restart (an upgrade, an
// eviction; the next daemon sets Ready again once it serves) and
// ReasonUninstalled when plexus left the node for good.
const (
	ReasonDaemonStopped = "DaemonStopped"
	ReasonUninstalled   = "Uninstalled"
)

// Stopped sets the node's Ready condition False with reason and message as
// the daemon stops, so that a node whose daemon is gone never reads as
// serving; no reconcile writes after it. When the conflist is gone (an
// uninstall removed it), ConfigWritten turns False with the same reason, so
// no condition still names a file the node no longer has. It reads live
// (the cache has stopped) and retries on conflict; a node without a status
// is left so; an uninstall may have revoked the daemon's credentials
// already, so a refusal is logged, not returned.
func (r *StatusReconciler) Stopped(ctx context.Context, reason, message string) {
	r.stopped.Store(true)
	if r.writing != nil {
		select {
		case r.writing <- struct{}{}:
			defer func() { <-r.writing }()
		case <-ctx.Done():
			ctrl.LoggerFrom(ctx).Error(ctx.Err(), "Marking the node's NodeNetworkStatus not Ready as the daemon stops: a status write still waits on the API server",
				"node", r.NodeName, "reason", reason)
			return
		}
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		nns := &v1alpha1.NodeNetworkStatus{}
		if err := r.Live.Get(ctx, client.ObjectKey{Name: r.NodeName}, nns); err != nil {
			return err
		}
		meta.SetStatusCondition(&nns.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse,
			Reason: reason, Message: r.HostPaths.Show(message)})
		nns.Status.LastHeartbeatTime = heartbeat(time.Now())
		conflist := r.Node.ConfDir + "/" + ConfigFileName
		if _, err := os.Stat(conflist); errors.Is(err, fs.ErrNotExist) {
			meta.SetStatusCondition(&nns.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionConfigWritten, Status: metav1.ConditionFalse,
				Reason: reason, Message: r.HostPaths.Show(conflist + " was removed as the daemon stopped")})
		}
		return r.Client.Status().Update(ctx, nns)
	})
	if err != nil && !apierrors.IsNotFound(err) {
		ctrl.LoggerFrom(ctx).Error(err, "Marking the node's NodeNetworkStatus not Ready as the daemon stops", "node", r.NodeName, "reason", reason)
	}
}

// ReasonConfigRestored is the reason of the Warning Event on a node's
// NodeNetworkStatus when its daemon put the node conflist back after
// someone else removed or changed it.
const ReasonConfigRestored = "ConfigRestored"

// reasonRestored is the ConfigWritten condition's reason once the node
// conflist was restored.
const reasonRestored = "Restored"

// reportRestore sends one Event per restore the node config saw since the
// last one (restores close together make one Event).
func (r *StatusReconciler) reportRestore(nns *v1alpha1.NodeNetworkStatus) {
	node := r.Node.State()
	if node.ConfigRestores <= r.restoresReported || r.Recorder == nil {
		return
	}
	r.restoresReported = node.ConfigRestores
	r.Recorder.Eventf(nns, corev1.EventTypeWarning, ReasonConfigRestored, "node %s: %s", r.NodeName, r.HostPaths.Show(restoreMessage(r.Node.ConfDir, node)))
}

// restoreMessage says what happened to the conflist, when, and what it
// means for pods.
func restoreMessage(confDir string, node NodeState) string {
	meanwhile := "absent"
	if node.ConfigRestoredBecause == "changed" {
		meanwhile = "altered"
	}
	return fmt.Sprintf("%s/%s was %s by someone else and restored at %s (restore %d since the daemon started); "+
		"pods that started while it was %s may lack their networks (see status.bypassedPods)",
		confDir, ConfigFileName, node.ConfigRestoredBecause, node.ConfigRestored.UTC().Format(time.RFC3339), node.ConfigRestores, meanwhile)
}

// reportForeign sends an Event per leftover config set aside since the last
// call, and a Warning Event each time the configs that sort before the node
// conflist change (none when they are gone).
func (r *StatusReconciler) reportForeign(nns *v1alpha1.NodeNetworkStatus) {
	if r.Recorder == nil {
		return
	}
	node := r.Node.State()
	if news := node.SetAsides - r.setAsidesReported; news > 0 {
		r.setAsidesReported = node.SetAsides
		list := node.SetAside[max(0, len(node.SetAside)-news):]
		for _, set := range list {
			r.Recorder.Eventf(nns, corev1.EventTypeNormal, ReasonLeftoverSetAside, "node %s: %s", r.NodeName, r.HostPaths.Show(set.Message(r.Node.BinDir)))
		}
	}
	msg := ""
	if len(node.Foreign) > 0 {
		msg = foreignMessage(node.Foreign, r.Node.BinDir)
	}
	if msg != r.foreignReported && msg != "" {
		r.Recorder.Eventf(nns, corev1.EventTypeWarning, node.Foreign[0].Reason(), "node %s: %s", r.NodeName, r.HostPaths.Show(msg))
	}
	r.foreignReported = msg
}

func (r *StatusReconciler) create(ctx context.Context) (*v1alpha1.NodeNetworkStatus, error) {
	nns := &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: r.NodeName}}
	node := &corev1.Node{}
	if err := r.Live.Get(ctx, client.ObjectKey{Name: r.NodeName}, node); err != nil {
		return nil, fmt.Errorf("node %s: %w", r.NodeName, err)
	}
	// Owned by the Node, so it goes away with it.
	if err := controllerutil.SetOwnerReference(node, nns, r.Client.Scheme()); err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, nns); err != nil {
		return nil, err
	}
	return nns, nil
}

// fill computes the status from what the node's parts see. Conditions keep
// their transition times while their status holds.
func (r *StatusReconciler) fill(st *v1alpha1.NodeNetworkStatusStatus) {
	node := r.Node.State()
	nets := r.Networks.Summary()
	st.DefaultNetwork = nil
	if node.Default != nil {
		st.DefaultNetwork = &v1alpha1.DefaultNetwork{Name: node.Default.List.Name, File: node.DefaultFile,
			Type: pluginTypes(node.Default), CNIVersion: node.Default.List.CNIVersion}
	}
	st.ConfigFile = r.Node.ConfDir + "/" + ConfigFileName
	st.ConfigWritten = nil
	if !node.ConfigWritten.IsZero() {
		t := metav1.NewTime(node.ConfigWritten.Truncate(time.Second))
		st.ConfigWritten = &t
	}
	st.NetworksRendered, st.NetworksRejected = int32(nets.Rendered), int32(nets.Rejected)
	st.Rejected, st.Warnings, st.MissingPlugins = nets.RejectedList, nets.Warnings, nets.MissingPlugins
	st.Plugins = r.plugins()
	if recs, err := readRecords(r.Records); err == nil {
		st.Attachments, st.TeardownsPending = int32(recs.sandboxes), int32(recs.failed)
	}
	st.Hotplug = nil
	if r.Hotplug != nil {
		st.Hotplug = r.Hotplug.Status()
	}
	st.BypassedPods, st.Bypassed = 0, nil
	if r.Bypassed != nil {
		n, list := r.Bypassed.Summary()
		st.BypassedPods, st.Bypassed = int32(n), list
	}

	set := func(t string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg})
	}
	if node.Default != nil {
		set(v1alpha1.ConditionDefaultNetworkFound, true, "Found", fmt.Sprintf("%s (%s) in %s", node.Default.List.Name, pluginTypes(node.Default), node.DefaultFile))
	} else {
		set(v1alpha1.ConditionDefaultNetworkFound, false, "NotFound", node.DefaultError)
	}
	switch {
	case node.ConfigCurrent && !node.ConfigRestored.IsZero():
		set(v1alpha1.ConditionConfigWritten, true, reasonRestored, restoreMessage(r.Node.ConfDir, node))
		// True stays True, so the transition is set by hand: it is when
		// the file came back.
		meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionConfigWritten).LastTransitionTime = metav1.NewTime(node.ConfigRestored.Truncate(time.Second))
	case node.ConfigCurrent:
		set(v1alpha1.ConditionConfigWritten, true, "Written", st.ConfigFile)
	default:
		set(v1alpha1.ConditionConfigWritten, false, "NotWritten", node.ConfigError)
	}
	if node.ShimInstalled {
		set(v1alpha1.ConditionShimInstalled, true, "Installed", r.Node.BinDir+"/"+ShimName)
	} else {
		set(v1alpha1.ConditionShimInstalled, false, "NotInstalled", node.ShimError)
	}
	if len(node.Foreign) == 0 {
		set(v1alpha1.ConditionConfigFirst, true, "First", "no other config sorts before "+ConfigFileName)
	} else {
		set(v1alpha1.ConditionConfigFirst, false, node.Foreign[0].Reason(), foreignMessage(node.Foreign, r.Node.BinDir))
	}
	ready := r.Node.Ready()
	if ready == nil && r.Serving != nil {
		ready = r.Serving()
	}
	if ready == nil {
		set(v1alpha1.ConditionReady, true, "Ready", "serving CNI calls")
	} else {
		set(v1alpha1.ConditionReady, false, "NotReady", ready.Error())
	}
	r.HostPaths.status(st)
}

// HostPaths is where the node's root is mounted in the daemon's container
// ("/host" in the chart and config/default); empty when the daemon runs on
// the node itself. Paths the daemon reports (in NodeNetworkStatus and
// Events) are shown as the node sees them, so that an operator can look
// them up there.
type HostPaths string

// Show rewrites every path under the mount in s to the node's path.
func (h HostPaths) Show(s string) string {
	if h == "" || h == "/" {
		return s
	}
	return strings.ReplaceAll(s, strings.TrimSuffix(string(h), "/")+"/", "/")
}

// status rewrites the paths of a status.
func (h HostPaths) status(st *v1alpha1.NodeNetworkStatusStatus) {
	if st.DefaultNetwork != nil {
		st.DefaultNetwork.File = h.Show(st.DefaultNetwork.File)
	}
	st.ConfigFile = h.Show(st.ConfigFile)
	for _, list := range [][]v1alpha1.NetworkProblem{st.Rejected, st.Warnings} {
		for i := range list {
			list[i].Message = h.Show(list[i].Message)
		}
	}
	for i := range st.Conditions {
		st.Conditions[i].Message = h.Show(st.Conditions[i].Message)
	}
}

// plugins lists the plugin binaries of the node's CNI bin dir for
// status.plugins: the names of its files and links, sorted, hidden ones
// (a copy being written) left out. The dir is read again only when its
// modification time changed, so a refresh usually costs one stat. A dir
// that cannot be read lists nothing.
func (r *StatusReconciler) plugins() []string {
	dir := r.Node.BinDir
	st, err := os.Stat(dir)
	if err != nil {
		r.binDir, r.binDirListed = time.Time{}, nil
		return nil
	}
	if !st.ModTime().IsZero() && st.ModTime().Equal(r.binDir) {
		return slices.Clone(r.binDirListed)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		r.binDir, r.binDirListed = time.Time{}, nil
		return nil
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		names = append(names, e.Name())
	}
	r.binDir, r.binDirListed = st.ModTime(), names
	return slices.Clone(names)
}
