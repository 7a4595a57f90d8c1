package settings_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plexus-cni/plexus/cmd/settings"
)

// testFlags is a flag set shaped like the daemon's.
type testFlags struct {
	fs       *flag.FlagSet
	network  string
	isolate  bool
	globals  string
	timeout  time.Duration
	logLevel string
}

func newTestFlags(args ...string) (*testFlags, error) {
	f := &testFlags{fs: flag.NewFlagSet("plexus-daemon", flag.ContinueOnError)}
	f.fs.StringVar(&f.network, "default-network", "", "")
	f.fs.BoolVar(&f.isolate, "namespace-isolation", true, "")
	f.fs.StringVar(&f.globals, "global-namespaces", "default", "")
	f.fs.DurationVar(&f.timeout, "operation-timeout", time.Minute, "")
	f.fs.StringVar(&f.logLevel, "zap-log-level", "info", "")
	f.fs.String("config", "", "")
	return f, f.fs.Parse(args)
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigFileSetsFlags(t *testing.T) {
	path := writeConfig(t, `
default-network: cbr0
namespace-isolation: false
global-namespaces: [default, shared-networks]
operation-timeout: 45s
zap-log-level: 3
`)
	f, err := newTestFlags()
	if err != nil {
		t.Fatal(err)
	}
	if err := settings.ApplyConfigFile(f.fs, path, nil); err != nil {
		t.Fatal(err)
	}
	if f.network != "cbr0" || f.isolate || f.globals != "default,shared-networks" || f.timeout != 45*time.Second || f.logLevel != "3" {
		t.Errorf("got network %q, isolation %t, globals %q, timeout %s, log level %q",
			f.network, f.isolate, f.globals, f.timeout, f.logLevel)
	}
}

func TestCommandLineWinsOverConfigFile(t *testing.T) {
	path := writeConfig(t, "zap-log-level: debug\nnamespace-isolation: false\n")
	f, err := newTestFlags("--zap-log-level=error")
	if err != nil {
		t.Fatal(err)
	}
	if err := settings.ApplyConfigFile(f.fs, path, nil); err != nil {
		t.Fatal(err)
	}
	if f.logLevel != "error" || f.isolate {
		t.Errorf("log level %q (want the command line's error), isolation %t (want the file's false)", f.logLevel, f.isolate)
	}
}

func TestEmptyConfigFileChangesNothing(t *testing.T) {
	f, err := newTestFlags()
	if err != nil {
		t.Fatal(err)
	}
	if err := settings.ApplyConfigFile(f.fs, writeConfig(t, "# nothing set\n"), nil); err != nil {
		t.Fatal(err)
	}
	if f.globals != "default" || !f.isolate {
		t.Errorf("defaults changed: globals %q, isolation %t", f.globals, f.isolate)
	}
}

func TestBadConfigFileNamesTheSetting(t *testing.T) {
	for _, tc := range []struct{ name, content, want string }{
		{"unknown setting", "namespace-isolatoin: false\n", `unknown setting "namespace-isolatoin"`},
		{"config itself", "config: /other.yaml\n", `setting "config": a settings file cannot name another`},
		{"refused value", "operation-timeout: soon\n", `setting "operation-timeout"`},
		{"map value", "default-network: {name: x}\n", `setting "default-network": want a string, number, boolean or a list of those, not a map`},
		{"comma in a list item", "global-namespaces: [\"a,b\"]\n", `holds a comma`},
		{"not a map", "- a\n- b\n", "want a map of settings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			f, err := newTestFlags()
			if err != nil {
				t.Fatal(err)
			}
			err = settings.ApplyConfigFile(f.fs, path, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %v, want one naming %s and saying %q", err, path, tc.want)
			}
		})
	}
	f, _ := newTestFlags()
	if err := settings.ApplyConfigFile(f.fs, filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Error("a missing config file gave no error")
	}
}

// The daemon and the webhook read one settings file: each skips the
// other's settings, even one it has a flag of the same name for, and
// still refuses a name that is neither's.
func TestConfigFileSkipsTheOtherBinarysSettings(t *testing.T) {
	path := writeConfig(t, "port: 9443\ncert-dir: /certs\nzap-log-level: debug\nnamespace-isolation: false\n")
	f, err := newTestFlags()
	if err != nil {
		t.Fatal(err)
	}
	if err := settings.ApplyConfigFile(f.fs, path, []string{"port", "cert-dir", "zap-log-level"}); err != nil {
		t.Fatal(err)
	}
	if f.logLevel != "info" || f.isolate {
		t.Errorf("log level %q (want the default: ignored), isolation %t (want the file's false)", f.logLevel, f.isolate)
	}
	if err := settings.ApplyConfigFile(f.fs, path, []string{"port"}); err == nil || !strings.Contains(err.Error(), `unknown setting "cert-dir"`) {
		t.Errorf("a setting neither binary has: %v", err)
	}
}
