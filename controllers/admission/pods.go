package admission

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/plexus-cni/plexus/plugin"
)

// PodsPath is where the API server sends pods (controller-runtime's
// default path for the kind).
const PodsPath = "/validate--v1-pod"

// PodValidator refuses, on create, a pod whose network annotations every
// node's ADD would refuse (plugin.PodPolicy.CheckPodNetworks, with the
// daemons' settings), with the ADD's message: an annotation that does not
// parse, invalid or duplicate interface names (the default network's eth0
// and the --default-networks' net1, net2, ... counted), two networks
// claiming one default route, a network namespace isolation forbids.
// Whether the networks exist is not checked: a pod may be created before
// its definitions, and each node waits for them.
type PodValidator struct {
	// Policy is the daemons' settings (the shared settings file).
	Policy plugin.PodPolicy
}

var _ admission.CustomValidator = &PodValidator{}

// SetupWithManager registers the validator at PodsPath.
func (v *PodValidator) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr).For(&corev1.Pod{}).WithValidator(v).Complete()
}

// ValidateCreate checks a new pod's network annotations. A host-network
// pod is admitted: the runtime calls no CNI plugin for it.
func (v *PodValidator) ValidateCreate(ctx context.Context, obj runtime.Object) (admission.Warnings, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, fmt.Errorf("want a Pod, got %T", obj)
	}
	if pod.Spec.HostNetwork {
		return nil, nil
	}
	ns := pod.Namespace
	if ns == "" {
		if req, err := admission.RequestFromContext(ctx); err == nil {
			ns = req.Namespace
		}
	}
	p := &plugin.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID), Annotations: pod.Annotations}
	if _, err := v.Policy.CheckPodNetworks(p, plugin.PodIfName); err != nil {
		return nil, err
	}
	return nil, nil
}

// ValidateUpdate admits every update: a running pod's networks annotation
// is hot-plug's business, which reports its own failures.
func (v *PodValidator) ValidateUpdate(context.Context, runtime.Object, runtime.Object) (admission.Warnings, error) {
	return nil, nil
}

// ValidateDelete admits every delete.
func (v *PodValidator) ValidateDelete(context.Context, runtime.Object) (admission.Warnings, error) {
	return nil, nil
}

// Setup registers both validators on mgr's webhook server.
func Setup(mgr ctrl.Manager, policy plugin.PodPolicy) error {
	if err := (&NetworkValidator{Reader: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&PodValidator{Policy: policy}).SetupWithManager(mgr)
}
