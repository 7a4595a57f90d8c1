package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/plexus-cni/plexus/cmd/settings"
	"github.com/plexus-cni/plexus/hack/flagsdoc"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// The webhook's own settings are the ones the daemon skips in the shared
// settings file: settings.WebhookNames must be exactly the webhook's
// flags the daemon lacks.
func TestWebhookSettingsAreTheWebhooksOwnFlags(t *testing.T) {
	fs := flag.NewFlagSet("plexus-webhook", flag.ContinueOnError)
	bindFlags(fs)
	var own []string
	fs.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(settings.DaemonNames, f.Name) {
			own = append(own, f.Name)
		}
	})
	if want := slices.Sorted(slices.Values(settings.WebhookNames)); !slices.Equal(own, want) {
		t.Errorf("the webhook's own flags are %q, settings.WebhookNames lists %q", own, want)
	}
	for _, s := range settings.PodPolicyNames {
		if fs.Lookup(s) == nil {
			t.Errorf("pod policy setting %q is no webhook flag", s)
		}
	}
}

// The webhook reads the daemons' settings file: the pod policy settings
// apply, the daemon's others do not (not even those it has a flag of the
// same name for), and a typo stops it.
func TestWebhookReadsTheDaemonsSettingsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(content string) {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`
namespace-isolation: false
global-namespaces: [default, shared]
default-networks: [mgmt, infra/storage]
system-namespaces: [kube-system, ops]
default-network-namespace: ops
hotplug: builtin
cni-bin-dir: /opt/cni/bin
metrics-bind-address: ":9091"
health-probe-bind-address: ":9092"
zap-log-level: debug
port: 10443
`)
	fs := flag.NewFlagSet("plexus-webhook", flag.ContinueOnError)
	f := bindFlags(fs)
	if err := fs.Parse([]string{"--global-namespaces=default,cli"}); err != nil {
		t.Fatal(err)
	}
	if err := settings.ApplyConfigFile(fs, path, fileIgnores()); err != nil {
		t.Fatal(err)
	}
	o, err := f.options("plexus-system")
	if err != nil {
		t.Fatal(err)
	}
	p := o.Policy
	if p.IsolateNamespaces || !slices.Equal(p.GlobalNamespaces, []string{"default", "cli"}) ||
		!slices.Equal(p.SystemNamespaces, []string{"kube-system", "ops"}) || p.DefaultNetworkNamespace != "ops" ||
		len(p.DefaultNetworks) != 2 || p.DefaultNetworks[0].String() != "ops/mgmt" || p.DefaultNetworks[1].String() != "infra/storage" {
		t.Errorf("policy %+v", p)
	}
	if o.Port != 10443 || o.MetricsAddr != "0" || o.ProbeAddr != ":8081" || fs.Lookup("zap-log-level").Value.String() == "debug" {
		t.Errorf("port %d (want the file's), metrics %q, probes %q, log level %s (want the webhook's defaults)",
			o.Port, o.MetricsAddr, o.ProbeAddr, fs.Lookup("zap-log-level").Value)
	}

	write("namespace-isolaton: false\n")
	err = settings.ApplyConfigFile(flag.NewFlagSet("x", flag.ContinueOnError), path, fileIgnores())
	if err == nil || !strings.Contains(err.Error(), `unknown setting "namespace-isolaton"`) {
		t.Errorf("a typo: %v", err)
	}
}

func TestBadOptionsAreRefused(t *testing.T) {
	for _, c := range []struct {
		args      []string
		namespace string
		want      string
	}{
		{[]string{"--certificates=cert-manager"}, "plexus", `--certificates "cert-manager": want self or external`},
		{nil, "", "$POD_NAMESPACE"},
		{[]string{"--default-networks=a/b/c"}, "plexus", "--default-networks"},
	} {
		fs := flag.NewFlagSet("plexus-webhook", flag.ContinueOnError)
		f := bindFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		if _, err := f.options(c.namespace); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error saying %q", c.args, err, c.want)
		}
	}
}

// docs/configuration.md lists the webhook's flags as bindFlags defines
// them (`make docs` rewrites the table).
func TestConfigurationPageListsTheWebhooksFlags(t *testing.T) {
	fs := flag.NewFlagSet("plexus-webhook", flag.ContinueOnError)
	bindFlags(fs)
	flagsdoc.Check(t, filepath.Join(plugintest.RepoRoot(t), "docs", "configuration.md"), "plexus-webhook", flagsdoc.Table(fs, nil))
}
