package controllertest

import (
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// NewEnvironment is an envtest environment (kube-apiserver and etcd from
// assets) with the given CRDs. The API server advertises loopback, so it
// also starts in a network namespace with no default route, where the
// tests run.
func NewEnvironment(assets string, crdDirs ...string) *envtest.Environment {
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
	}
	env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", "127.0.0.1")
	return env
}
