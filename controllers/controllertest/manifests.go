package controllertest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// Doc is one object of a rendered manifest stream (kustomize, helm
// template): its type, name and labels, and its YAML to decode.
type Doc struct {
	Kind, Namespace, Name string
	Labels                map[string]string
	Raw                   []byte
}

// Key names a Doc: "Kind namespace/name".
func (d Doc) Key() string { return d.Kind + " " + d.Namespace + "/" + d.Name }

// SplitYAML splits a multi-document YAML stream into its objects, in
// order, leaving out documents without a kind (comments only). An object
// rendered twice fails the test.
func SplitYAML(t testing.TB, stream []byte) []Doc {
	t.Helper()
	var docs []Doc
	seen := map[string]bool{}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("reading rendered YAML: %v", err)
		}
		var head struct {
			metav1.TypeMeta   `json:",inline"`
			metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal(raw, &head); err != nil {
			t.Fatalf("decoding a rendered object: %v\n%s", err, raw)
		}
		if head.Kind == "" {
			continue
		}
		d := Doc{Kind: head.Kind, Namespace: head.Namespace, Name: head.Name, Labels: head.Labels, Raw: raw}
		if seen[d.Key()] {
			t.Errorf("%s rendered twice", d.Key())
		}
		seen[d.Key()] = true
		docs = append(docs, d)
	}
}

// Kubectl is $KUBECTL, or the kubectl `make envtest-assets` builds.
func Kubectl(t testing.TB) string {
	t.Helper()
	if k := os.Getenv("KUBECTL"); k != "" {
		return k
	}
	root := plugintest.RepoRoot(t)
	out, err := exec.Command(filepath.Join(root, "hack", "build-k8s.sh"), "--print-version").Output()
	if err != nil {
		t.Fatalf("hack/build-k8s.sh --print-version: %v", err)
	}
	k := filepath.Join(root, ".cache", "k8s", strings.TrimSpace(string(out)), "bin", "kubectl")
	plugintest.RequireFile(t, k, "run `make envtest-assets`, or set KUBECTL")
	return k
}

// Shipped decodes strictly, into out, the object of this kind in the
// repository's file config/<file> (generated from the chart by `make
// manifests`), so that tests run with exactly what plexus installs. The
// file must hold one object of the kind.
func Shipped(t testing.TB, file, kind string, out any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(plugintest.RepoRoot(t), "config", file))
	if err != nil {
		t.Fatalf("%v (run `make manifests`)", err)
	}
	var found []Doc
	for _, d := range SplitYAML(t, data) {
		if d.Kind == kind {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("config/%s holds %d %s objects, want 1", file, len(found), kind)
	}
	if err := yaml.UnmarshalStrict(found[0].Raw, out); err != nil {
		t.Fatalf("config/%s, %s: %v", file, found[0].Key(), err)
	}
}

// Kustomize renders the repository's config/default as `kubectl apply -k`
// would apply it.
func Kustomize(t testing.TB) []byte {
	t.Helper()
	return KustomizeDir(t, "default")
}

// KustomizeDir renders config/<dir> as `kubectl apply -k` would apply it.
func KustomizeDir(t testing.TB, dir string) []byte {
	t.Helper()
	return KustomizePath(t, filepath.Join(plugintest.RepoRoot(t), "config", dir))
}

// KustomizePath renders the kustomization in dir as `kubectl apply -k`
// would apply it.
func KustomizePath(t testing.TB, dir string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, Kubectl(t), "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	return out
}
