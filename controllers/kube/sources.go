// Package kube connects the CNI core to Kubernetes: pods and network
// definitions read from the daemon's informer caches, the network-status
// writer and the pod Events writer.
package kube

import (
	"context"
	"fmt"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/netstore"
)

// Pods finds pods in the cache of this node's pods, and asks the API
// server only when the cache misses or holds another pod of that name (a
// pod deleted and recreated faster than the watch delivered it).
//
// A static pod is known to the runtime by its own UID, while the API
// server holds its mirror pod under another, with the runtime's UID in
// the kubernetes.io/config.mirror annotation: that mirror pod is the pod
// (and takes its network-status). Any other UID mismatch is refused.
type Pods struct {
	Cache client.Reader
	Live  client.Reader
}

// MirrorPodAnnotation on a mirror pod holds the UID kubelet (and so the
// runtime) knows its static pod by.
const MirrorPodAnnotation = corev1.MirrorPodAnnotationKey

func (p *Pods) Pod(ctx context.Context, namespace, name, uid string) (*plugin.Pod, error) {
	key := k8stypes.NamespacedName{Namespace: namespace, Name: name}
	pod := &corev1.Pod{}
	err := p.Cache.Get(ctx, key, pod)
	if err == nil && isPod(pod, uid) {
		return toPod(pod), nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	if err := p.Live.Get(ctx, key, pod); err != nil {
		return nil, err
	}
	if !isPod(pod, uid) {
		if mirror, ok := pod.Annotations[MirrorPodAnnotation]; ok {
			return nil, fmt.Errorf("mirror pod of a static pod with UID %s, the runtime asked for %s (static pod changed?)", mirror, uid)
		}
		return nil, fmt.Errorf("pod has UID %s, the runtime asked for %s (deleted and recreated?)", pod.UID, uid)
	}
	return toPod(pod), nil
}

// isPod tells whether pod is the one the runtime called for by uid: the
// same UID, or the mirror pod of the static pod of that UID.
func isPod(pod *corev1.Pod, uid string) bool {
	if uid == "" || string(pod.UID) == uid {
		return true
	}
	mirror, ok := pod.Annotations[MirrorPodAnnotation]
	return ok && mirror == uid
}

func toPod(p *corev1.Pod) *plugin.Pod {
	return &plugin.Pod{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID), Annotations: p.Annotations}
}

// Networks finds NetworkAttachmentDefinitions: first in the node's store
// of rendered definitions (validated on this node, read from disk, no API
// server needed), then in the cache, and in the API server on a miss: a
// definition created a moment before its pod may not have reached either
// yet, and a missing one is an error path only.
type Networks struct {
	Store *netstore.Store
	Cache client.Reader
	Live  client.Reader
}

func (n *Networks) Network(ctx context.Context, key k8stypes.NamespacedName) (*nadv1.NetworkAttachmentDefinition, error) {
	if n.Store != nil {
		if e, err := n.Store.Get(key); err == nil {
			return fromEntry(key, e), nil
		}
	}
	nad := &nadv1.NetworkAttachmentDefinition{}
	err := n.Cache.Get(ctx, key, nad)
	if apierrors.IsNotFound(err) {
		err = n.Live.Get(ctx, key, nad)
	}
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("network %s: %w", key, plugin.ErrNetworkNotFound)
	}
	if err != nil {
		return nil, err
	}
	return nad, nil
}

func fromEntry(key k8stypes.NamespacedName, e *netstore.Entry) *nadv1.NetworkAttachmentDefinition {
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
			UID: k8stypes.UID(e.UID), ResourceVersion: e.ResourceVersion},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: string(e.Config)},
	}
	if e.ResourceName != "" {
		nad.Annotations = map[string]string{plugin.ResourceNameAnnotation: e.ResourceName}
	}
	return nad
}
