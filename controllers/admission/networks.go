// Package admission is plexus's validating admission webhook: it refuses,
// when they are applied, the NetworkAttachmentDefinitions every node would
// reject and the pods every node's ADD would refuse, with the nodes' own
// messages, and warns about what only some nodes lack. What needs a node
// (a definition's config file in a conf dir, a definition that exists when
// a pod starts) stays the node's business.
package admission

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/netstore"
)

// NetworksPath is where the API server sends NetworkAttachmentDefinitions
// (controller-runtime's default path for the kind).
const NetworksPath = "/validate-k8s-cni-cncf-io-v1-networkattachmentdefinition"

// MaxNodesNamed bounds the nodes a warning names one by one; the count is
// always given.
const MaxNodesNamed = 5

// NetworkValidator checks NetworkAttachmentDefinitions on create and
// update. It refuses what every node would reject (controllers.Validate:
// spec.config that does not parse as a conf or conflist, a plugin without
// a type, an unsupported cniVersion, a name unusable in a node's store, a
// config delegating to plexus itself) and a malformed resourceName
// annotation; it warns about a defaulted cniVersion, an empty spec.config
// (each node reads a file of its own) and plugin types some nodes lack
// (per their NodeNetworkStatus.status.plugins).
type NetworkValidator struct {
	// Reader lists the NodeNetworkStatuses (the manager's cache).
	Reader client.Reader
}

var _ admission.CustomValidator = &NetworkValidator{}

// SetupWithManager registers the validator at NetworksPath.
func (v *NetworkValidator) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr).For(&nadv1.NetworkAttachmentDefinition{}).WithValidator(v).Complete()
}

// ValidateCreate checks a new definition.
func (v *NetworkValidator) ValidateCreate(ctx context.Context, obj runtime.Object) (admission.Warnings, error) {
	nad, ok := obj.(*nadv1.NetworkAttachmentDefinition)
	if !ok {
		return nil, fmt.Errorf("want a NetworkAttachmentDefinition, got %T", obj)
	}
	return v.validate(ctx, nad)
}

// ValidateUpdate checks a definition whose spec.config or resourceName
// annotation changed. Any other update (labels, finalizers, an owner) is
// admitted as is, so that a definition made invalid before the webhook
// existed can still be relabelled and deleted.
func (v *NetworkValidator) ValidateUpdate(ctx context.Context, oldObj, newObj runtime.Object) (admission.Warnings, error) {
	old, ok := oldObj.(*nadv1.NetworkAttachmentDefinition)
	nad, ok2 := newObj.(*nadv1.NetworkAttachmentDefinition)
	if !ok || !ok2 {
		return nil, fmt.Errorf("want NetworkAttachmentDefinitions, got %T and %T", oldObj, newObj)
	}
	if old.Spec.Config == nad.Spec.Config && resourceName(old) == resourceName(nad) {
		return nil, nil
	}
	return v.validate(ctx, nad)
}

// ValidateDelete admits every delete.
func (v *NetworkValidator) ValidateDelete(context.Context, runtime.Object) (admission.Warnings, error) {
	return nil, nil
}

func resourceName(nad *nadv1.NetworkAttachmentDefinition) string {
	return nad.Annotations[plugin.ResourceNameAnnotation]
}

// validate is the check of a definition as it is about to be stored.
func (v *NetworkValidator) validate(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) (admission.Warnings, error) {
	key := k8stypes.NamespacedName{Namespace: nad.Namespace, Name: nad.Name}
	refuse := func(format string, args ...interface{}) error {
		return fmt.Errorf("NetworkAttachmentDefinition %s: %s", key, fmt.Sprintf(format, args...))
	}
	if v, ok := nad.Annotations[plugin.ResourceNameAnnotation]; ok {
		if err := CheckResourceName(v); err != nil {
			return nil, refuse("annotation %s: %v", plugin.ResourceNameAnnotation, err)
		}
	}
	if nad.Spec.Config == "" {
		if err := netstore.CheckKey(key); err != nil {
			return nil, refuse("%v", err)
		}
		return admission.Warnings{fmt.Sprintf("NetworkAttachmentDefinition %s: spec.config is empty: each node uses the config named %q in its own CNI conf dir, "+
			"and refuses the pods selecting it where there is none (see the node's NodeNetworkStatus)", key, nad.Name)}, nil
	}
	// Every plugin counts as installed here: which nodes lack one is a
	// warning, below.
	n, warning, problem, _ := controllers.Validate(nad, "", "", func(string) bool { return true })
	if problem != nil {
		return nil, refuse("%s", problem.Message)
	}
	var warnings admission.Warnings
	if warning != nil {
		warnings = append(warnings, fmt.Sprintf("NetworkAttachmentDefinition %s: spec.config: %s; set cniVersion to say which version the plugins speak", key, warning.Message))
	}
	missing, err := v.missingOnNodes(ctx, func(has func(string) bool) []string { return controllers.MissingPlugins(n, has) })
	if err != nil {
		warnings = append(warnings, fmt.Sprintf("NetworkAttachmentDefinition %s: the nodes' plugins were not checked: %v", key, err))
	}
	for _, m := range missing {
		warnings = append(warnings, fmt.Sprintf("NetworkAttachmentDefinition %s: plugin %s is not in the CNI bin dir of %s: pods selecting it there fail until it is installed",
			key, m.plugin, nodeList(m.nodes)))
	}
	return warnings, nil
}

// missingPlugin is a plugin type and the nodes lacking it.
type missingPlugin struct {
	plugin string
	nodes  []string
}

// missingOnNodes asks each node's published plugins which types missing
// reports absent. A node that has published none yet (its daemon starting,
// or older than status.plugins) is not judged.
func (v *NetworkValidator) missingOnNodes(ctx context.Context, missing func(has func(string) bool) []string) ([]missingPlugin, error) {
	if v.Reader == nil {
		return nil, nil
	}
	list := &v1alpha1.NodeNetworkStatusList{}
	if err := v.Reader.List(ctx, list); err != nil {
		return nil, err
	}
	byPlugin := map[string][]string{}
	for i := range list.Items {
		plugins := list.Items[i].Status.Plugins
		if len(plugins) == 0 {
			continue
		}
		has := func(t string) bool { return slices.Contains(plugins, t) }
		for _, t := range missing(has) {
			byPlugin[t] = append(byPlugin[t], list.Items[i].Name)
		}
	}
	out := make([]missingPlugin, 0, len(byPlugin))
	for t, nodes := range byPlugin {
		sort.Strings(nodes)
		out = append(out, missingPlugin{plugin: t, nodes: nodes})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].plugin < out[j].plugin })
	return out, nil
}

// nodeList names at most MaxNodesNamed nodes and counts the rest.
func nodeList(nodes []string) string {
	word := "nodes"
	if len(nodes) == 1 {
		word = "node"
	}
	if len(nodes) <= MaxNodesNamed {
		return word + " " + strings.Join(nodes, ", ")
	}
	return fmt.Sprintf("%d nodes: %s and %d more", len(nodes), strings.Join(nodes[:MaxNodesNamed], ", "), len(nodes)-MaxNodesNamed)
}

// CheckResourceName checks a k8s.v1.cni.cncf.io/resourceName annotation:
// the extended resource (a device plugin's) whose devices back the
// network, a qualified name with a domain, "domain/name" (as
// intel.com/sriov_netdevice), outside the kubernetes.io domains that
// Kubernetes keeps for its own resources. An empty value names none.
func CheckResourceName(v string) error {
	if v == "" {
		return nil
	}
	domain, _, ok := strings.Cut(v, "/")
	if !ok {
		return fmt.Errorf("%q has no domain: want an extended resource name, domain/name, as the device plugin advertises it (e.g. intel.com/sriov_netdevice)", v)
	}
	if errs := validation.IsQualifiedName(v); len(errs) > 0 {
		return fmt.Errorf("%q is not an extended resource name (domain/name, as the device plugin advertises it): %s", v, strings.Join(errs, "; "))
	}
	if domain == "kubernetes.io" || strings.HasSuffix(domain, ".kubernetes.io") {
		return fmt.Errorf("%q: domain %s is Kubernetes' own; a device plugin's resource has its vendor's domain (e.g. intel.com/sriov_netdevice)", v, domain)
	}
	return nil
}
