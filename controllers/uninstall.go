package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Owner tells, when the daemon stops, an uninstall from a restart. A
// restart (an upgrade's rolling update, a crash, a node reboot) must leave
// the node conflist in place, or pods started before the next daemon is
// up would get the default network alone, silently. An uninstall must
// remove it, or every later pod on the node would fail to start, calling
// a daemon that is gone.
//
// The daemon's pod names its DaemonSet in its owner references; Owner
// reads them once at start. At stop the daemon was uninstalled when that
// DaemonSet is gone, is being deleted, is another one by that name (its
// UID differs), no longer selects this node by its nodeSelector (the
// node's labels or the selector changed), or when the API server no
// longer accepts the daemon's credentials (an uninstall deletes its
// ServiceAccount and RBAC too, and may do so before the pod is told to
// stop). Anything else, the API
// server unreachable included, counts as a restart: keeping the conflist
// is the safe mistake, since the next daemon serves it.
type Owner struct {
	// Reader reads without a cache: Start runs before caches sync, and
	// the check at stop runs after they stopped.
	Reader       client.Reader
	PodNamespace string
	PodName      string
	// NodeName is this node, checked against the DaemonSet's nodeSelector.
	NodeName string

	mu    sync.Mutex
	owner *metav1.OwnerReference
}

// NeedLeaderElection is false: every node's daemon has its own pod.
func (o *Owner) NeedLeaderElection() bool { return false }

// Start looks the daemon's DaemonSet up from its pod, retrying until it
// has it or ctx ends. Without a pod name (the daemon runs outside a pod)
// it does nothing, and Uninstalled always says no.
func (o *Owner) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("owner")
	if o.PodName == "" || o.PodNamespace == "" {
		log.Info("No POD_NAME and POD_NAMESPACE: the node conflist is kept whenever the daemon stops")
		return nil
	}
	log = log.WithValues("pod", klog.KRef(o.PodNamespace, o.PodName))
	_ = wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Cap: time.Minute, Steps: 1 << 30},
		func(ctx context.Context) (bool, error) {
			pod := &corev1.Pod{}
			if err := o.Reader.Get(ctx, types.NamespacedName{Namespace: o.PodNamespace, Name: o.PodName}, pod); err != nil {
				log.Info("Reading the daemon's own pod failed, retrying", "reason", err.Error())
				return false, nil
			}
			ref := metav1.GetControllerOf(pod)
			if ref == nil || ref.Kind != "DaemonSet" {
				log.Info("The daemon's pod is not a DaemonSet's: the node conflist is kept whenever the daemon stops")
				return true, nil
			}
			o.mu.Lock()
			o.owner = ref
			o.mu.Unlock()
			log.V(1).Info("Owner found", "daemonSet", klog.KRef(o.PodNamespace, ref.Name))
			return true, nil
		})
	return nil
}

// Uninstalled says whether the daemon's DaemonSet was uninstalled, and why.
func (o *Owner) Uninstalled(ctx context.Context) (bool, string) {
	o.mu.Lock()
	ref := o.owner
	o.mu.Unlock()
	if ref == nil {
		return false, "the daemon's DaemonSet is not known"
	}
	name := o.PodNamespace + "/" + ref.Name
	ds := &appsv1.DaemonSet{}
	err := o.Reader.Get(ctx, types.NamespacedName{Namespace: o.PodNamespace, Name: ref.Name}, ds)
	switch {
	case apierrors.IsNotFound(err):
		return true, fmt.Sprintf("DaemonSet %s is gone", name)
	case apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err):
		return true, fmt.Sprintf("the API server refuses the daemon's credentials (%v): its ServiceAccount or RBAC was removed", err)
	case err != nil:
		return false, fmt.Sprintf("DaemonSet %s could not be read: %v", name, err)
	case ds.UID != ref.UID:
		return true, fmt.Sprintf("DaemonSet %s was replaced (uid %s, this pod's is %s)", name, ds.UID, ref.UID)
	case ds.DeletionTimestamp != nil:
		return true, fmt.Sprintf("DaemonSet %s is being deleted", name)
	}
	if sel := ds.Spec.Template.Spec.NodeSelector; len(sel) > 0 && o.NodeName != "" {
		node := &corev1.Node{}
		if err := o.Reader.Get(ctx, types.NamespacedName{Name: o.NodeName}, node); err == nil &&
			!labels.SelectorFromSet(sel).Matches(labels.Set(node.Labels)) {
			return true, fmt.Sprintf("node %s no longer matches DaemonSet %s's nodeSelector %s", o.NodeName, name, labels.Set(sel))
		}
	}
	return false, fmt.Sprintf("DaemonSet %s is still installed", name)
}
