package settings_test

import (
	"flag"
	"slices"
	"strings"
	"testing"

	"github.com/plexus-cni/plexus/cmd/settings"
)

// Both programs define the pod policy's flags with BindPodPolicyFlags:
// the defaults show as the flags' defaults, a list flag takes
// comma-separated items (blanks dropped) and replaces the default, and
// Policy parses the default networks or names the bad one.
func TestPodPolicyFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	p := settings.DefaultPodPolicy()
	settings.BindPodPolicyFlags(fs, &p)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if !slices.Equal(names, settings.PodPolicyNames) {
		t.Errorf("flags %q, settings.PodPolicyNames %q", names, settings.PodPolicyNames)
	}
	if d := fs.Lookup("global-namespaces").DefValue; d != "default" {
		t.Errorf("--global-namespaces default %q, want default", d)
	}
	if d := fs.Lookup("default-networks").DefValue; d != "" {
		t.Errorf("--default-networks default %q, want none", d)
	}
	if err := fs.Parse([]string{"--global-namespaces= a, ,b", "--default-networks=mgmt,infra/storage", "--namespace-isolation=false"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.GlobalNamespaces, []string{"a", "b"}) || p.IsolateNamespaces {
		t.Errorf("parsed %+v", p)
	}
	policy, err := p.Policy()
	if err != nil || len(policy.DefaultNetworks) != 2 || policy.DefaultNetworks[0].String() != "kube-system/mgmt" ||
		!slices.Equal(policy.GlobalNamespaces, p.GlobalNamespaces) || !slices.Equal(policy.SystemNamespaces, []string{"kube-system"}) {
		t.Errorf("policy %+v, %v", policy, err)
	}
	p.DefaultNetworks = []string{"a/b/c"}
	if _, err := p.Policy(); err == nil || !strings.Contains(err.Error(), `"a/b/c"`) {
		t.Errorf("a bad default network: %v", err)
	}
}
