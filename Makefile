# plexus: a delegating multi-network CNI meta-plugin for Kubernetes.
# `make help` lists the targets. Long builds (Kubernetes binaries, the
# reference CNI plugins, tools) are cached under .cache/, keyed by version.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

K8S_VERSION     := $(shell hack/build-k8s.sh --print-version)
CNI_VERSION     := v1.9.1
CACHE           := $(CURDIR)/.cache
K8S_BIN         := $(CACHE)/k8s/$(K8S_VERSION)/bin
CNI_BIN         := $(CACHE)/cni/$(CNI_VERSION)/bin
BIN             := $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION := v0.19.0
CONTROLLER_GEN  := $(CACHE)/bin/controller-gen-$(CONTROLLER_TOOLS_VERSION)/controller-gen
# helm, built from the Go module proxy. v3.21 is built on Kubernetes 1.36
# client libraries, so it supports clusters 1.33 to 1.36 (ours: 1.34). The
# e2e/chart tests read HELM_VERSION from this line.
HELM_VERSION    := v3.21.4
HELM_K8S_MINOR  := 36
HELM            := $(CACHE)/bin/helm-$(HELM_VERSION)/helm
HELM_LDFLAGS    := -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/internal/version.gitTreeState=clean \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_K8S_MINOR) \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_K8S_MINOR)
CHART           := charts/plexus
GO_TEST_FLAGS   ?=
# Tests run in a network namespace of their own, so the bridges and veths
# they make never touch the host's network.
NETNS_RUN       := unshare --net -- sh -c 'ip link set lo up && exec "$$@"' sh

export KUBEBUILDER_ASSETS := $(K8S_BIN)
export CNI_PLUGINS_DIR    := $(CNI_BIN)

##@ General

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
		/^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Build

.PHONY: build
# Static, as in the image: a shim linked against the C library pays the
# dynamic loader on every one of its execs (1 ms of a 2.2 ms exec here).
build: ## Build the CNI shim (bin/plexus), the node daemon (bin/plexus-daemon) and the admission webhook (bin/plexus-webhook), statically linked.
	CGO_ENABLED=0 go build -trimpath -o $(BIN)/plexus ./cmd/plexus
	CGO_ENABLED=0 go build -trimpath -o $(BIN)/plexus-daemon ./cmd
	CGO_ENABLED=0 go build -trimpath -o $(BIN)/plexus-webhook ./cmd/webhook

# The release image: an OCI archive of the static programs (hack/image),
# named $(IMAGE_NAME):$(VERSION). The same sources give the same digest.
# `ctr -n k8s.io images import` loads it on a node; skopeo or crane push it
# (docs/install.md, "The image").
VERSION    := $(shell cat VERSION)
IMAGE_NAME ?= plexus.local/plexus
IMAGE_DIR  := $(BIN)/images

.PHONY: image
image: ## Build the release image as an OCI archive, bin/images/plexus-<VERSION>.tar (name: IMAGE_NAME=...).
	go run ./hack/image/cmd --repo . --ref $(IMAGE_NAME):$(VERSION) --out $(IMAGE_DIR)

.PHONY: cni-plugins
cni-plugins: $(CNI_BIN)/.static ## Build the reference CNI plugins the tests delegate to (cached).
# Static, as released plugins are: the daemon runs them from an image with
# no C library.
$(CNI_BIN)/.static:
	@echo "building the reference CNI plugins $(CNI_VERSION) (first run only, ~1 min)..."
	mkdir -p $(CNI_BIN)
	CGO_ENABLED=0 GOBIN=$(CNI_BIN) go install github.com/containernetworking/plugins/plugins/...@$(CNI_VERSION)
	touch $@

.PHONY: helm
helm: $(HELM) ## Build helm from the Go module proxy (cached per version).
# The ldflags are the ones helm's own release build sets: without them helm
# reports version "v3.21" and renders and lints for Kubernetes 1.20.
$(HELM):
	@echo "building helm $(HELM_VERSION) (first run only, ~3 min)..."
	CGO_ENABLED=0 GOBIN=$(dir $(HELM)) go install -trimpath -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver and kubectl from source and install etcd for envtest (cached).
	hack/build-k8s.sh $(K8S_BIN) kube-apiserver kubectl
	hack/install-etcd.sh $(K8S_BIN)

##@ Generate

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen (cached per version).
$(CONTROLLER_GEN):
	GOBIN=$(dir $(CONTROLLER_GEN)) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the API's deepcopy code (api/*/zz_generated.deepcopy.go).
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

# The deployment is defined once, in the Helm chart. config/ is generated
# from it: hack/manifests renders charts/plexus (release plexus, namespace
# kube-system, hack/manifests/values.yaml) into one kustomize directory per
# component, plus config/default and config/delegate-api. The CRDs come
# from api/ (controller-gen, config/crd/bases) and the NPWG's copy
# (config/crd/npwg); the chart carries them as copies, byte for byte. The
# CRD bases are removed first so that a renamed or deleted kind leaves no
# stale CRD behind.
.PHONY: manifests
manifests: $(CONTROLLER_GEN) $(HELM) ## Generate the CRDs (config/crd/bases), copy them into the chart, and generate config/ from the chart.
	rm -f config/crd/bases/*.yaml
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	rm -f $(CHART)/crds/*.yaml
	cp config/crd/bases/*.yaml config/crd/npwg/*.yaml $(CHART)/crds/
	go run ./hack/manifests/cmd --helm $(HELM) --chart $(CHART) --values hack/manifests/values.yaml --config config

# git is asked about files once they are tracked: a new one is caught as an
# untracked file under api/ or config/.
.PHONY: verify-manifests
verify-manifests: generate manifests ## Fail if generated code, the CRDs or config/ differ from what 'make generate manifests' writes.
	@if ! git diff --quiet -- api config $(CHART)/crds || [ -n "$$(git ls-files --others --exclude-standard -- api config $(CHART)/crds)" ]; then \
		echo "verify-manifests: api/, config/ or $(CHART)/crds is not what 'make generate manifests' produces, or is not in git:"; \
		git status --short -- api config $(CHART)/crds; \
		git --no-pager diff -- api config $(CHART)/crds; \
		echo "config/ is generated from $(CHART): change the chart (or hack/manifests/values.yaml), then"; \
		echo "run 'make generate manifests' and commit api/, config/ and $(CHART)/crds."; \
		exit 1; \
	fi

.PHONY: docs
docs: ## Regenerate the flag tables of docs/configuration.md from the daemon's and the webhook's flags.
	PLEXUS_UPDATE_DOCS=1 go test ./cmd/ ./cmd/webhook/ -run TestConfigurationPage -count=1

.PHONY: helm-docs
helm-docs: ## Regenerate the Helm values table of docs/install.md from charts/plexus/values.yaml.
	go run ./hack/helm-docs --values $(CHART)/values.yaml --readme docs/install.md

##@ Test

.PHONY: test
test: lint verify-manifests helm-lint cni-plugins envtest-assets ## Run every test: real netns, real plugins, a real kube-apiserver (as root).
	go mod download
	go build ./...
	HELM=$(HELM) PLEXUS_REQUIRE_REAL=1 $(NETNS_RUN) go test $(GO_TEST_FLAGS) ./...

.PHONY: lint
lint: ## go vet, gofmt and go mod tidy checks.
	go vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go mod tidy -diff

.PHONY: helm-lint
helm-lint: $(HELM) ## helm lint --strict the chart, with its defaults and with e2e/chart's test values.
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --values e2e/chart/testdata/values-custom.yaml

##@ Benchmarks

# The benchmarks run in a network namespace of their own, like the tests.
# BENCH_FLAGS passes options to e2e/bench (`$(BIN)/plexus-bench -h`), e.g.
# BENCH_FLAGS='-only overhead -pairs 400'.
BENCH_FLAGS ?=
BENCH_OUT   := $(CURDIR)/bench
BENCH_RUN    = $(NETNS_RUN) $(BIN)/plexus-bench --shim $(BIN)/plexus --daemon $(BIN)/plexus-daemon \
	--cni-bin $(CNI_BIN) --assets $(K8S_BIN) --log-dir $(BENCH_OUT)

.PHONY: bench-build
bench-build: build ## Build the benchmark program (bin/plexus-bench) and the binaries it runs.
	go build -o $(BIN)/plexus-bench ./e2e/bench/cmd/bench

.PHONY: bench
bench: bench-build cni-plugins envtest-assets ## Benchmarks (not part of test): overhead over the bare delegates, API requests, burst, daemon memory -> bench/results.json (docs/benchmarks.md).
	$(BENCH_RUN) --out $(BENCH_OUT)/results.json $(BENCH_FLAGS)
	@echo; echo "==> Go benchmarks of the core's pure functions (allocations per call)"
	@$(MAKE) --no-print-directory bench-go

# BENCH_GO_FLAGS passes options to go test, e.g. BENCH_GO_FLAGS='-count 5'.
BENCH_GO_FLAGS ?=

.PHONY: bench-go
bench-go: ## Go benchmarks of the core's pure functions (ADD's plan, network-status, selections), -benchmem; part of bench.
	go test -run '^$$' -bench . -skip 'ThreeNetworks' -benchmem $(BENCH_GO_FLAGS) ./plugin/...

.PHONY: bench-profile
bench-profile: bench-build cni-plugins envtest-assets ## CPU profile of the daemon serving ADDs (bench/add.cpu.pprof), printed with pprof -top.
	$(BENCH_RUN) --cpuprofile $(BENCH_OUT)/add.cpu.pprof $(BENCH_FLAGS)
	@echo; echo "==> the daemon's own CPU on the ADD path, by cumulative time (left out: the DELs, this program's"
	@echo "    work, and running the delegates, which a runtime without plexus pays too; see docs/benchmarks.md)"
	go tool pprof -top -cum -nodecount=40 -tagfocus=plexus=daemon \
		-ignore='\(\*Engine\)\.Del$$|invoke\.\(\*RawExec\)\.ExecPlugin' $(BIN)/plexus-bench $(BENCH_OUT)/add.cpu.pprof

##@ Demo

.PHONY: demo
demo: cluster-deps cluster-tool ## On a real single-node cluster (started if none runs): a pod with three extra networks.
	$(call cluster,up) --reuse
	$(call cluster,demo)

.PHONY: demo-down
demo-down: cluster-down ## Tear down the demo's cluster (same as cluster-down).

.PHONY: demo-local
demo-local: build cni-plugins envtest-assets ## The demo without kubelet: real API server, daemon and shim, a netns as the pod.
	$(NETNS_RUN) go run ./e2e/localdemo --shim $(BIN)/plexus --cni-bin $(CNI_BIN) --assets $(K8S_BIN)

.PHONY: clean
clean: ## Remove build outputs (keeps the .cache of long builds).
	rm -rf $(BIN)

##@ Cluster (a real single-node Kubernetes on this machine; root)

CLUSTER_TOOL := $(BIN)/plexus-cluster
# $(call cluster,SUBCOMMAND): the cluster tool with this repo's cached binaries.
cluster = $(CLUSTER_TOOL) $(1) --k8s-bin $(K8S_BIN) --cni-bin $(CNI_BIN) --helm $(HELM)
KEEP_CLUSTER ?=
E2E_FLAGS    ?=

.PHONY: cluster-tool
cluster-tool: $(HELM) ## Build the cluster tool (bin/plexus-cluster: up, down, status, kubeconfig, images, demo).
	go build -o $(CLUSTER_TOOL) ./e2e/cluster/cmd/cluster

.PHONY: cluster-deps
cluster-deps: cni-plugins ## Build every Kubernetes component and whereabouts from source (cached) and install etcd, containerd, runc, busybox-static, iptables.
	hack/build-k8s.sh $(K8S_BIN) all
	hack/install-etcd.sh $(K8S_BIN)
	hack/cluster/install-runtime.sh

.PHONY: images
images: cluster-tool ## Build the pause, busybox and plexus images as OCI archives into .cache/images.
	hack/cluster/install-runtime.sh
	$(call cluster,images)

.PHONY: cluster-up
cluster-up: cluster-deps cluster-tool ## Start a fresh cluster (tearing down a previous one), plexus installed with its Helm chart.
	$(call cluster,up)

.PHONY: cluster-down
cluster-down: cluster-tool ## Tear the cluster down and clean the node; also after a failed cluster-up.
	$(call cluster,down)

# Figure 5 of docs/benchmarks.md and the admission webhook's cost
# (cluster_webhook_pod_ready_s) on the real cluster; BENCH_CLUSTER_FLAGS
# passes options (e.g. -figures webhook -pods 30), on the host's network
# like e2e (it makes pods and a bridge on the node). The cluster is reused if
# healthy and torn down afterwards unless KEEP_CLUSTER=1.
BENCH_CLUSTER_FLAGS ?=

.PHONY: bench-cluster
bench-cluster: cluster-deps cluster-tool ## Pod create to Ready on the cluster: 3 networks vs none (figure 5), with vs without the webhook -> bench/results.json.
	go build -o $(BIN)/plexus-bench-cluster ./e2e/bench/cmd/cluster-ready
	@rc=0; \
	$(call cluster,up) --reuse || rc=$$?; \
	if [ $$rc -eq 0 ]; then \
		$(BIN)/plexus-bench-cluster --cluster-kubeconfig $$($(call cluster,kubeconfig)) --out $(BENCH_OUT)/results.json $(BENCH_CLUSTER_FLAGS) || rc=$$?; \
	fi; \
	if [ "$(KEEP_CLUSTER)" != 1 ]; then $(call cluster,down) || rc=$$?; \
	else echo "KEEP_CLUSTER=1: the cluster keeps running (make cluster-down)"; fi; \
	exit $$rc

.PHONY: cluster-status
cluster-status: cluster-tool ## Show the cluster's processes, node and plexus daemon.
	$(call cluster,status)

# The suite runs on the host's network (not in NETNS_RUN): it checks the
# node's own links and files. The cluster is torn down afterwards, whatever
# the outcome, unless KEEP_CLUSTER=1.
.PHONY: e2e
e2e: cluster-deps cluster-tool ## The ginkgo e2e suite on the cluster (reused if healthy; down after unless KEEP_CLUSTER=1).
	@rc=0; \
	$(call cluster,up) --reuse || rc=$$?; \
	if [ $$rc -eq 0 ]; then \
		PLEXUS_E2E_KUBECONFIG=$$($(call cluster,kubeconfig)) PLEXUS_E2E_KUBECTL=$(K8S_BIN)/kubectl \
		PLEXUS_E2E_HELM=$(HELM) PLEXUS_E2E_HELM_VALUES=$$($(call cluster,values)) \
			go test ./e2e/ -count=1 -timeout 30m -v -ginkgo.v $(E2E_FLAGS) || rc=$$?; \
	fi; \
	if [ "$(KEEP_CLUSTER)" != 1 ]; then $(call cluster,down) || rc=$$?; \
	else echo "KEEP_CLUSTER=1: the cluster keeps running (make cluster-down)"; fi; \
	exit $$rc

# whereabouts, the cluster-wide IPAM plugin the e2e cluster installs on its
# node (plugin, CRDs, kubeconfig): built from the Go module proxy through
# the wrapper module hack/whereabouts, cached per version.
WHEREABOUTS_VERSION := $(shell hack/build-whereabouts.sh --print-version)
WHEREABOUTS_DIR     := $(CACHE)/whereabouts/$(WHEREABOUTS_VERSION)

.PHONY: whereabouts
whereabouts: ## Build whereabouts' IPAM plugin from source, static, and copy its CRDs (cached per version, ~1 min cold).
	hack/build-whereabouts.sh $(WHEREABOUTS_DIR)

cluster-deps: whereabouts
