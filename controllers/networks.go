package controllers

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/netconf"
	"github.com/plexus-cni/plexus/plugin/netstore"
)

// Reasons a definition is rejected or warned about, in events and in the
// node's status.
const (
	ReasonInvalidName         = "InvalidName"
	ReasonInvalidConfig       = "InvalidConfig"
	ReasonPluginMissing       = "PluginMissing"
	ReasonDefaultedCNIVersion = "DefaultedCNIVersion"
	ReasonRendered            = "Rendered"
)

// recheck is how often definitions that depend on the node (a file in the
// conf dir, a plugin not installed yet) are validated again.
const recheck = time.Minute

// NetworkReconciler validates every NetworkAttachmentDefinition against
// this node (its JSON, cniVersion, names, and the plugins in the node's bin
// dir) and renders the valid ones into the node's store, from which ADD
// resolves them. An invalid one gets an Event saying why, from this node.
type NetworkReconciler struct {
	Reader  client.Reader
	Store   *netstore.Store
	ConfDir string
	BinDir  string
	// HasPlugin, if set, says whether a plugin type is installed, the way
	// the delegates are run (a daemon running them in the node's root
	// resolves links within it); nil looks in BinDir.
	HasPlugin func(plugin string) bool
	// HostPaths shows paths in Events as the node sees them.
	HostPaths HostPaths
	NodeName  string
	Recorder  record.EventRecorder
	OnChange  func()

	mu       sync.Mutex
	rendered map[k8stypes.NamespacedName]bool
	rejected map[k8stypes.NamespacedName]v1alpha1.NetworkProblem
	warned   map[k8stypes.NamespacedName]v1alpha1.NetworkProblem
	missing  map[k8stypes.NamespacedName][]string
}

// SetupWithManager registers the reconciler.
func (r *NetworkReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.rendered = map[k8stypes.NamespacedName]bool{}
	r.rejected = map[k8stypes.NamespacedName]v1alpha1.NetworkProblem{}
	r.warned = map[k8stypes.NamespacedName]v1alpha1.NetworkProblem{}
	r.missing = map[k8stypes.NamespacedName][]string{}
	return ctrl.NewControllerManagedBy(mgr).Named("networks").For(&nadv1.NetworkAttachmentDefinition{}).Complete(r)
}

// Reconcile renders, or rejects, one definition.
func (r *NetworkReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := r.Reader.Get(ctx, req.NamespacedName, nad); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		if _, err := r.Store.Delete(req.NamespacedName); err != nil {
			return ctrl.Result{}, err
		}
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	n, warnings, problem, missing := Validate(nad, r.ConfDir, r.BinDir, r.HasPlugin)
	result := ctrl.Result{}
	if nad.Spec.Config == "" || problem != nil && problem.Reason == ReasonPluginMissing {
		result.RequeueAfter = recheck
	}
	if problem != nil {
		if _, err := r.Store.Delete(req.NamespacedName); err != nil {
			return ctrl.Result{}, err
		}
		if r.setRejected(req.NamespacedName, problem, missing) {
			r.Recorder.Eventf(nad, corev1.EventTypeWarning, problem.Reason, "node %s: %s", r.NodeName, r.HostPaths.Show(problem.Message))
		}
		return result, nil
	}
	wrote, err := r.Store.Put(req.NamespacedName, &netstore.Entry{
		UID:             string(nad.UID),
		ResourceVersion: nad.ResourceVersion,
		ResourceName:    nad.Annotations[plugin.ResourceNameAnnotation],
		Config:          n.List.Bytes,
	})
	if err != nil {
		return ctrl.Result{}, err
	}
	if r.setRendered(req.NamespacedName, warnings) && wrote && warnings != nil {
		r.Recorder.Eventf(nad, corev1.EventTypeWarning, warnings.Reason, "node %s: %s", r.NodeName, r.HostPaths.Show(warnings.Message))
	}
	return result, nil
}

// Validate checks a definition as this node would run it. It returns the
// normalised network, a warning, or the problem that rejects it (with the
// plugin types missing from binDir, if that is the problem). has says
// whether a plugin type is installed; nil looks in binDir.
func Validate(nad *nadv1.NetworkAttachmentDefinition, confDir, binDir string, has func(string) bool) (*netconf.Network, *v1alpha1.NetworkProblem, *v1alpha1.NetworkProblem, []string) {
	key := k8stypes.NamespacedName{Namespace: nad.Namespace, Name: nad.Name}
	problem := func(reason, format string, args ...interface{}) *v1alpha1.NetworkProblem {
		return &v1alpha1.NetworkProblem{Namespace: key.Namespace, Name: key.Name, Reason: reason, Message: fmt.Sprintf(format, args...)}
	}
	if err := netstore.CheckKey(key); err != nil {
		return nil, nil, problem(ReasonInvalidName, "%v", err), nil
	}
	var n *netconf.Network
	var err error
	if nad.Spec.Config == "" {
		n, _, err = netconf.FindFile(confDir, nad.Name, plugin.IsOwnConfig)
	} else {
		n, err = netconf.Load([]byte(nad.Spec.Config), nad.Name)
	}
	if err != nil {
		return nil, nil, problem(ReasonInvalidConfig, "spec.config: %v", err), nil
	}
	if plugin.IsOwnConfig("", n) {
		return nil, nil, problem(ReasonInvalidConfig, "spec.config: delegates to plexus itself"), nil
	}
	if has == nil {
		has = func(t string) bool { return exists(filepath.Join(binDir, t)) }
	}
	if missing := MissingPlugins(n, has); len(missing) > 0 {
		return nil, nil, problem(ReasonPluginMissing, "plugin %s not found in %s (delegate %s)",
			strings.Join(missing, ", "), binDir, pluginTypes(n)), missing
	}
	if len(n.Warnings) > 0 {
		return n, problem(ReasonDefaultedCNIVersion, "%s", strings.Join(n.Warnings, "; ")), nil, nil
	}
	return n, nil, nil, nil
}

// MissingPlugins lists, sorted, the plugin and IPAM types of a network
// that has says are not installed: a node's daemon asks its bin dir, the
// admission webhook each node's NodeNetworkStatus.status.plugins.
func MissingPlugins(n *netconf.Network, has func(string) bool) []string {
	var missing []string
	check := func(t string) {
		if t != "" && !slices.Contains(missing, t) && !has(t) {
			missing = append(missing, t)
		}
	}
	for _, p := range n.List.Plugins {
		check(p.Network.Type)
		check(p.Network.IPAM.Type)
	}
	sort.Strings(missing)
	return missing
}

func (r *NetworkReconciler) setRejected(key k8stypes.NamespacedName, p *v1alpha1.NetworkProblem, missing []string) bool {
	r.mu.Lock()
	old, had := r.rejected[key]
	r.rejected[key] = *p
	r.missing[key] = missing
	delete(r.rendered, key)
	delete(r.warned, key)
	r.mu.Unlock()
	changed := !had || old != *p
	if changed {
		r.changed()
	}
	return changed
}

func (r *NetworkReconciler) setRendered(key k8stypes.NamespacedName, w *v1alpha1.NetworkProblem) bool {
	r.mu.Lock()
	old, hadWarning := r.warned[key]
	wasRendered := r.rendered[key]
	r.rendered[key] = true
	delete(r.rejected, key)
	delete(r.missing, key)
	if w != nil {
		r.warned[key] = *w
	} else {
		delete(r.warned, key)
	}
	r.mu.Unlock()
	changed := !wasRendered || hadWarning != (w != nil) || (w != nil && old != *w)
	if changed {
		r.changed()
	}
	return changed
}

func (r *NetworkReconciler) forget(key k8stypes.NamespacedName) {
	r.mu.Lock()
	_, a := r.rendered[key]
	_, b := r.rejected[key]
	delete(r.rendered, key)
	delete(r.rejected, key)
	delete(r.warned, key)
	delete(r.missing, key)
	r.mu.Unlock()
	if a || b {
		r.changed()
	}
}

func (r *NetworkReconciler) changed() {
	if r.OnChange != nil {
		r.OnChange()
	}
}

// NetworksSummary is the part of the node's status about definitions.
type NetworksSummary struct {
	Rendered, Rejected int
	RejectedList       []v1alpha1.NetworkProblem
	Warnings           []v1alpha1.NetworkProblem
	MissingPlugins     []string
}

// Summary reports the definitions rendered and rejected, lists sorted and
// capped at v1alpha1.MaxListed.
func (r *NetworkReconciler) Summary() NetworksSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := NetworksSummary{Rendered: len(r.rendered), Rejected: len(r.rejected)}
	for _, p := range r.rejected {
		s.RejectedList = append(s.RejectedList, p)
	}
	for _, p := range r.warned {
		s.Warnings = append(s.Warnings, p)
	}
	for _, m := range r.missing {
		for _, t := range m {
			if !slices.Contains(s.MissingPlugins, t) {
				s.MissingPlugins = append(s.MissingPlugins, t)
			}
		}
	}
	sort.Strings(s.MissingPlugins)
	s.RejectedList = sortCap(s.RejectedList)
	s.Warnings = sortCap(s.Warnings)
	return s
}

func sortCap(ps []v1alpha1.NetworkProblem) []v1alpha1.NetworkProblem {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Namespace != ps[j].Namespace {
			return ps[i].Namespace < ps[j].Namespace
		}
		return ps[i].Name < ps[j].Name
	})
	if len(ps) > v1alpha1.MaxListed {
		ps = ps[:v1alpha1.MaxListed]
	}
	return ps
}

// Prune removes rendered definitions that no longer exist: a definition
// deleted while the daemon was down leaves its file behind. It runs once
// the cache has synced (a manager Runnable).
func (r *NetworkReconciler) Prune(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("networks")
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := r.Reader.List(ctx, list); err != nil {
		log.Error(err, "Listing definitions to prune the node store")
		return nil
	}
	live := map[k8stypes.NamespacedName]bool{}
	for i := range list.Items {
		live[k8stypes.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}] = true
	}
	keys, err := r.Store.Keys()
	if err != nil {
		log.Error(err, "Listing the node store")
		return nil
	}
	for _, k := range keys {
		if !live[k] {
			if _, err := r.Store.Delete(k); err != nil {
				log.Error(err, "Pruning a deleted definition from the node store", "network", klog.KRef(k.Namespace, k.Name))
			}
		}
	}
	return nil
}
