package controllertest

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// Assets finds kube-apiserver and etcd built from source (make
// envtest-assets): $KUBEBUILDER_ASSETS, or the repository's cache. Without
// them the test is skipped, or fails under PLEXUS_REQUIRE_REAL.
func Assets(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(plugintest.RepoRoot(t), ".cache", "k8s", "v1.34.4", "bin")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			if os.Getenv("PLEXUS_REQUIRE_REAL") != "" {
				t.Fatalf("%s not in %s (run `make envtest-assets`)", b, dir)
			}
			t.Skipf("%s not in %s (run `make envtest-assets`)", b, dir)
		}
	}
	return dir
}

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
