package settings_test

import (
	"strings"
	"testing"

	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/cmd/settings"
)

// --default-networks takes "name" (in the default-network namespace) and
// "namespace/name"; anything else stops the daemon with the entry named.
func TestParseDefaultNetworks(t *testing.T) {
	got, err := settings.ParseDefaultNetworks([]string{"sidecar", "infra/storage"}, "kube-system")
	want := []k8stypes.NamespacedName{{Namespace: "kube-system", Name: "sidecar"}, {Namespace: "infra", Name: "storage"}}
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"Upper", "a/b/c", "/x", "ns/", "bad_name"} {
		_, err := settings.ParseDefaultNetworks([]string{bad}, "kube-system")
		if err == nil || !strings.Contains(err.Error(), "--default-networks") || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v, want an error naming the flag and the entry", bad, err)
		}
	}
}
