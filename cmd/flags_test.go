package main

import (
	"bytes"
	"errors"
	"flag"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/plexus-cni/plexus/cmd/settings"
	"github.com/plexus-cni/plexus/hack/flagsdoc"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// plexus-webhook tells the daemon's settings in the shared settings file
// from typos by settings.DaemonNames: it must name exactly the daemon's
// flags (controller-runtime adds --kubeconfig to the command line).
func TestDaemonSettingsAreTheDaemonsFlags(t *testing.T) {
	fs := flag.NewFlagSet("plexus-daemon", flag.ContinueOnError)
	bindFlags(fs)
	names := []string{"kubeconfig"}
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	slices.Sort(names)
	want := slices.Sorted(slices.Values(settings.DaemonNames))
	if !slices.Equal(names, want) {
		t.Errorf("the daemon's flags are\n%q\nsettings.DaemonNames lists\n%q", names, want)
	}
	for _, s := range settings.PodPolicyNames {
		if fs.Lookup(s) == nil {
			t.Errorf("pod policy setting %q is no daemon flag", s)
		}
	}
	for _, s := range settings.WebhookNames {
		if fs.Lookup(s) != nil {
			t.Errorf("webhook setting %q is a daemon flag too: the daemon would skip it in the settings file", s)
		}
	}
}

// docs/configuration.md lists the daemon's flags as bindFlags defines
// them (`make docs` rewrites the table).
func TestConfigurationPageListsTheDaemonsFlags(t *testing.T) {
	fs := flag.NewFlagSet("plexus-daemon", flag.ContinueOnError)
	bindFlags(fs)
	flagsdoc.Check(t, filepath.Join(plugintest.RepoRoot(t), "docs", "configuration.md"), "plexus-daemon",
		flagsdoc.Table(fs, map[string]string{"node-name": "`$NODE_NAME`", "shim-source": "`plexus` beside the daemon binary"}))
}

// Error lines carry no stack trace unless asked for: a delegate refusing
// an ADD is an error line, not a bug of the daemon.
func TestErrorLinesCarryNoStackTraceByDefault(t *testing.T) {
	for _, args := range [][]string{nil, {"--zap-stacktrace-level=error"}} {
		fs := flag.NewFlagSet("plexus-daemon", flag.ContinueOnError)
		f := bindFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		zap.New(zap.UseFlagOptions(&f.zap), zap.WriteTo(&out)).Error(errors.New("plugin type=\"macvlan\" failed (add)"), "CNI call failed")
		got, want := strings.Contains(out.String(), `"stacktrace"`), len(args) > 0
		if got != want {
			t.Errorf("%q: stack trace %t, want %t:\n%s", args, got, want, out.String())
		}
	}
}
