// Package v1alpha1 holds plexus's own API: what each node's daemon sees.
// +kubebuilder:object:generate=true
// +groupName=plexus.cni.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of plexus's objects.
	GroupVersion = schema.GroupVersion{Group: "plexus.cni.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this group version.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
