package chart_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"sigs.k8s.io/yaml"
)

// TestChartVersion: the chart installs the project's version by default.
func TestChartVersion(t *testing.T) {
	root := repoRoot(t)
	version, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		APIVersion string `json:"apiVersion"`
		Name       string `json:"name"`
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	if want := strings.TrimSpace(string(version)); chart.AppVersion != want {
		t.Errorf("Chart.yaml appVersion = %q, VERSION = %q", chart.AppVersion, want)
	}
	if chart.APIVersion != "v2" || chart.Name != "plexus" || chart.Version == "" {
		t.Errorf("Chart.yaml: apiVersion %q, name %q, version %q; want v2, plexus, a version",
			chart.APIVersion, chart.Name, chart.Version)
	}
}

// TestLint: helm lint finds nothing to warn about, with the defaults and
// with every value changed. (helm's INFO that the chart has no icon stays:
// there is no published icon to point to.)
func TestLint(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"--strict"},
		{"--values", testdata("values-custom.yaml")},
		{"--strict", "--values", testdata("values-custom.yaml")},
	} {
		out, err := helmRun(t, slices.Concat([]string{"lint", chartPath(t)}, args)...)
		if err != nil {
			t.Errorf("helm lint %q: %v\n%s", args, err, out)
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "[WARNING]") || strings.Contains(line, "[ERROR]") {
				t.Errorf("helm lint %q: %s", args, line)
			}
		}
	}
}

// TestRenderedText looks at helm template's raw output for what a
// template bug leaves behind.
func TestRenderedText(t *testing.T) {
	for _, args := range [][]string{nil, {"--values", testdata("values-custom.yaml")}} {
		out := string(template(t, args...))
		for _, bad := range []string{"<no value>", `image: ":`, "image: :", `image: ""`, "%!"} {
			if strings.Contains(out, bad) {
				t.Errorf("helm template %q renders %q", args, bad)
			}
		}
	}
}

// TestInvalidValues: values the daemon could not run with fail the
// render, saying which value is wrong.
func TestInvalidValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"isolation not a bool", []string{"--set-string", "namespaceIsolation=yes"}, "namespaceIsolation must be true or false"},
		{"relative conf dir", []string{"--set", "cniConfDir=etc/cni"}, "cniConfDir must be an absolute path"},
		{"relative state dir", []string{"--set", "stateDir=plexus"}, "stateDir must be an absolute path"},
		{"relative readiness file", []string{"--set", "readinessIndicatorFile=ready"}, "readinessIndicatorFile must be an absolute path"},
		{"readiness dir taken", []string{"--set", "readinessIndicatorFile=/run/plexus/ready"}, "readinessIndicatorFile: its directory /run/plexus"},
		{"readiness dir is the node's root", []string{"--set", "readinessIndicatorFile=/ready"}, "readinessIndicatorFile: its directory /"},
		{"readiness dir is the config's", []string{"--set", "readinessIndicatorFile=/etc/plexus/ready"}, "readinessIndicatorFile: its directory /etc/plexus"},
		{"extraHostPaths, no longer needed", []string{"--set", "extraHostPaths[0]=/run/flannel"}, "extraHostPaths is no longer needed, and was removed: every delegate now runs in the node's root filesystem"},
		{"default network with two slashes", []string{"--set", "defaultNetworks={a/b/c}"}, `defaultNetworks[0] is "a/b/c": want "name"`},
		{"default network not a DNS name", []string{"--set", "defaultNetworks={infra/storage,UPPER}"}, `defaultNetworks[1] is "UPPER": want "name"`},
		{"default network with an empty namespace", []string{"--set", "defaultNetworks={/storage}"}, `defaultNetworks[0] is "/storage"`},
		{"relative delegate API socket", []string{"--set", "hotplug.mode=delegate-api", "--set", "hotplug.delegateAPISocket=multus.sock"}, "hotplug.delegateAPISocket must be an absolute path"},
		{"delegate API socket dir taken", []string{"--set", "hotplug.mode=delegate-api", "--set", "hotplug.delegateAPISocket=/run/plexus/multus.sock"}, "hotplug.delegateAPISocket: its directory /run/plexus"},
		{"readiness dir is the delegate API's", []string{"--set", "hotplug.mode=delegate-api", "--set", "readinessIndicatorFile=/run/multus/ready"}, "readinessIndicatorFile: its directory /run/multus"},
		{"unknown hotplug mode", []string{"--set", "hotplug.mode=auto"}, `hotplug.mode must be builtin, delegate-api or off, not "auto"`},
		{"same ports", []string{"--set", "metrics.port=9092"}, "metrics.port must be 0 (off) or a port number other than health.port"},
		{"service without metrics", []string{"--set", "metrics.port=0", "--set", "metrics.service.enabled=true"}, "metrics.service.enabled needs metrics.port"},
		{"no repository", []string{"--set", "image.repository="}, "image.repository must be set"},
		{"network without name", []string{"--set-json", `extraNetworks[0].config={"type":"bridge"}`}, "extraNetworks[0].name must be set"},
		{"network without config", []string{"--set", "extraNetworks[0].name=a"}, "extraNetworks[0] (a): config must be set"},
		{"network config not JSON", []string{"--set", "extraNetworks[0].name=a", "--set-string", "extraNetworks[0].config=macvlan"}, "extraNetworks[0] (a): config is not a JSON object"},
		{"network config a list", []string{"--set", "extraNetworks[0].name=a", "--set-json", `extraNetworks[0].config=[1]`}, "extraNetworks[0] (a): config must be a JSON string or an object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmRun(t, slices.Concat([]string{"template", release, chartPath(t), "--namespace", namespace}, tc.args)...)
			if err == nil {
				t.Fatalf("helm template %q succeeded, want an error containing %q", tc.args, tc.want)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("helm template %q: %s\nwant an error containing %q", tc.args, out, tc.want)
			}
		})
	}
}

// TestNotes renders NOTES.txt, which helm template leaves out, through a
// copy of the chart that also renders it into a ConfigMap, and checks that
// its commands name the release's objects and that its example network is
// a valid definition.
func TestNotes(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		notes := renderNotes(t)
		for _, want := range []string{
			"kubectl -n kube-system rollout status daemonset/plexus",
			"kubectl get nodenetworkstatuses",
			"kubectl -n kube-system rollout status deployment/plexus-webhook",
			"--annotations=k8s.v1.cni.cncf.io/networks=plexus-demo",
			"/etc/cni/net.d/00-plexus.conflist",
		} {
			if !strings.Contains(notes, want) {
				t.Errorf("NOTES lack %q:\n%s", want, notes)
			}
		}
		_, example, ok := strings.Cut(notes, "<<'YAML'\n")
		example, _, ok2 := strings.Cut(example, "\n  YAML\n")
		if !ok || !ok2 {
			t.Fatalf("NOTES have no NetworkAttachmentDefinition example:\n%s", notes)
		}
		var nad nadv1.NetworkAttachmentDefinition
		if err := yaml.UnmarshalStrict([]byte(dedent(example)), &nad); err != nil {
			t.Fatalf("NOTES' example: %v\n%s", err, example)
		}
		var config map[string]any
		if err := json.Unmarshal([]byte(nad.Spec.Config), &config); err != nil {
			t.Errorf("NOTES' example config %q: %v", nad.Spec.Config, err)
		}
		if nad.Kind != "NetworkAttachmentDefinition" || nad.Name != "plexus-demo" || nad.Namespace != "default" {
			t.Errorf("NOTES' example is %s default/%s, want NetworkAttachmentDefinition default/plexus-demo", nad.Kind, nad.Name)
		}
	})
	t.Run("custom", func(t *testing.T) {
		notes := renderNotes(t, "--values", testdata("values-custom.yaml"))
		for _, want := range []string{
			"kubectl -n team-a run plexus-demo",
			"--annotations=k8s.v1.cni.cncf.io/networks=storage",
			"kubectl -n team-a get pod plexus-demo",
			"  team-a/storage\n",
			"  default/sriov-net\n",
			"/etc/kubernetes/cni/net.d/00-plexus.conflist",
		} {
			if !strings.Contains(notes, want) {
				t.Errorf("NOTES lack %q:\n%s", want, notes)
			}
		}
		if strings.Contains(notes, "<<'YAML'") {
			t.Errorf("NOTES show the example definition although the release makes networks:\n%s", notes)
		}
	})
}

// notesTemplate renders the chart's NOTES.txt (copied to the chart's root,
// where .Files can read it) into a ConfigMap.
const notesTemplate = `apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}
`

func renderNotes(t *testing.T, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "plexus")
	if err := os.CopyFS(dir, os.DirFS(chartPath(t))); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes-under-test.txt"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "templates", "notes-under-test.yaml"), []byte(notesTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := helmRun(t, slices.Concat([]string{"template", release, dir, "--namespace", namespace,
		"--show-only", "templates/notes-under-test.yaml"}, args)...)
	if err != nil {
		t.Fatalf("rendering NOTES.txt: %v\n%s", err, out)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(out, &cm); err != nil {
		t.Fatal(err)
	}
	return cm.Data["notes"]
}

// dedent removes the two spaces NOTES indent their commands by.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "  ")
	}
	return strings.Join(lines, "\n")
}
