package main

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/plexus-cni/plexus/"

// layer is one ring of the package graph, from the inside out: a package
// of a layer may import packages of its own layer and of the layers before
// it, never of a later one.
type layer struct {
	name string
	// pkgs are module-relative import paths; a trailing "/..." takes the
	// subtree.
	pkgs []string
}

// layers is the package graph docs/development.md's Layout section describes:
// core ← api ← adapters ← controllers ← daemon ← cmd.
var layers = []layer{
	{"core", []string{"plugin/..."}},
	{"api", []string{"api/..."}},
	{"adapters", []string{"controllers/kube", "controllers/cniserver", "controllers/delegateapi"}},
	{"controllers", []string{"controllers", "controllers/admission", "controllers/controllertest"}},
	{"daemon", []string{"cmd/daemon", "cmd/settings"}},
	{"cmd", []string{"cmd", "cmd/plexus", "cmd/webhook"}},
}

// kubernetesClients are what the core must never link: it reaches the API
// server, kubelet and the manager only through the interfaces it declares
// (Pods, Networks, StatusPublisher, PodEvents, Devices). Kubernetes' and
// the NPWG's API types are fine, and so is the NPWG library's device-info
// helpers package (it links client-go for helpers the core does not call).
var kubernetesClients = []string{
	"k8s.io/client-go/",
	"sigs.k8s.io/controller-runtime",
	"k8s.io/kubelet/",
	"google.golang.org/grpc",
}

func layerOf(t *testing.T, pkg string) int {
	t.Helper()
	rel, ok := strings.CutPrefix(pkg, module)
	if !ok {
		return -1
	}
	best, bestLen := -1, -1
	for i, l := range layers {
		for _, p := range l.pkgs {
			if tree, ok := strings.CutSuffix(p, "/..."); ok {
				if (rel == tree || strings.HasPrefix(rel, tree+"/")) && len(tree) > bestLen {
					best, bestLen = i, len(tree)
				}
			} else if rel == p && len(p) > bestLen {
				best, bestLen = i, len(p)
			}
		}
	}
	return best
}

type goPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []goPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestImportsRunOneWay keeps the layering of docs/development.md's Layout section:
// no package imports one of a later layer, and the CNI core (plugin/)
// links no Kubernetes client, so that it can be read, tested and reused
// without one.
func TestImportsRunOneWay(t *testing.T) {
	pkgs := listPackages(t)
	viaNPWG := map[string]bool{}
	for _, dep := range deps(t, npwgUtils) {
		viaNPWG[dep] = true
	}
	seen := 0
	for _, p := range pkgs {
		from := layerOf(t, p.ImportPath)
		if from < 0 {
			continue // e2e/, hack/: tests and tools, outside the product's graph
		}
		seen++
		for _, imp := range p.Imports {
			if to := layerOf(t, imp); to > from {
				t.Errorf("%s (%s) imports %s (%s): imports must run %s", strings.TrimPrefix(p.ImportPath, module),
					layers[from].name, strings.TrimPrefix(imp, module), layers[to].name, order())
			}
		}
		if from != 0 {
			continue
		}
		for _, dep := range p.Deps {
			if viaNPWG[dep] && !slices.Contains(p.Imports, dep) {
				continue
			}
			for _, client := range kubernetesClients {
				if strings.HasPrefix(dep, client) {
					t.Errorf("core package %s links %s: the core takes Kubernetes through its interfaces; move the code that needs a client to an adapter (controllers/kube)",
						strings.TrimPrefix(p.ImportPath, module), dep)
				}
			}
		}
	}
	for _, want := range []string{"plugin", "api/v1alpha1", "controllers/kube", "controllers", "cmd/daemon", "cmd"} {
		if layerOf(t, module+want) < 0 {
			t.Errorf("package %s belongs to no layer", want)
		}
	}
	if seen < 10 {
		t.Fatalf("go list found only %d of the module's packages", seen)
	}
}

// TestEveryProductPackageHasALayer makes a new package pick its layer.
func TestEveryProductPackageHasALayer(t *testing.T) {
	for _, p := range listPackages(t) {
		rel, ok := strings.CutPrefix(p.ImportPath, module)
		if !ok || rel == "e2e" || strings.HasPrefix(rel, "e2e/") || strings.HasPrefix(rel, "hack/") {
			continue
		}
		if layerOf(t, p.ImportPath) < 0 {
			t.Errorf("package %s is in no layer of cmd/layers_test.go: add it to the layer whose packages it imports", rel)
		}
	}
}

// npwgUtils is the NPWG library's helpers package, whose dependencies the
// core may link (see kubernetesClients).
const npwgUtils = "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	return strings.Fields(string(out))
}

func order() string {
	names := make([]string, len(layers))
	for i, l := range layers {
		names[i] = l.name
	}
	return strings.Join(names, " ← ")
}

// TestWebhookDoesNotLinkTheDaemon: plexus-webhook takes what it shares
// with the daemon from cmd/settings, so that it does not carry the
// daemon's machinery (the CNI server, kubelet's pod-resources client, ...).
func TestWebhookDoesNotLinkTheDaemon(t *testing.T) {
	for _, dep := range deps(t, module+"cmd/webhook") {
		if dep == module+"cmd/daemon" || dep == module+"controllers/kube" {
			t.Errorf("plexus-webhook links %s: take what it shares with the daemon from cmd/settings", strings.TrimPrefix(dep, module))
		}
	}
}
