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
build: ## Build the CNI shim (bin/plexus) and the node daemon (bin/plexus-daemon).
	go build -trimpath -o $(BIN)/plexus ./cmd/plexus
	go build -trimpath -o $(BIN)/plexus-daemon ./cmd

.PHONY: cni-plugins
cni-plugins: $(CNI_BIN)/.static ## Build the reference CNI plugins the tests delegate to (cached).
# Static, as released plugins are: the daemon runs them from an image with
# no C library.
$(CNI_BIN)/.static:
	@echo "building the reference CNI plugins $(CNI_VERSION) (first run only, ~1 min)..."
	mkdir -p $(CNI_BIN)
	CGO_ENABLED=0 GOBIN=$(CNI_BIN) go install github.com/containernetworking/plugins/plugins/...@$(CNI_VERSION)
	touch $@

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

# The bases are removed first so that a renamed or deleted kind leaves no
# stale CRD behind. RBAC is not generated: config/rbac/role.yaml is written
# by hand.
.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the API's CRDs (config/crd/bases).
	rm -f config/crd/bases/*.yaml
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases

.PHONY: verify-manifests
verify-manifests: generate manifests ## Fail if generated code or CRDs under api/ and config/ differ from git.
	@if ! git diff --quiet -- api config || [ -n "$$(git ls-files --others --exclude-standard -- api config)" ]; then \
		echo "verify-manifests: api/ or config/ is not what 'make generate manifests' produces, or is not in git:"; \
		git status --short -- api config; \
		git --no-pager diff -- api config; \
		echo "run 'make generate manifests' and commit api/ and config/."; \
		exit 1; \
	fi

##@ Test

.PHONY: test
test: lint verify-manifests cni-plugins envtest-assets ## Run every test: real netns, real plugins, a real kube-apiserver (as root).
	go mod download
	go build ./...
	PLEXUS_REQUIRE_REAL=1 $(NETNS_RUN) go test $(GO_TEST_FLAGS) ./...

.PHONY: lint
lint: ## go vet, gofmt and go mod tidy checks.
	go vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go mod tidy -diff

.PHONY: bench
bench: cni-plugins ## Go benchmarks: plexus's overhead over the bare delegates, parsing (not part of test).
	$(NETNS_RUN) go test -run '^$$' -bench . -benchmem -benchtime 100x ./plugin/...

##@ Demo

.PHONY: demo
demo: build cni-plugins envtest-assets ## A pod with three extra networks, attached by the real daemon and shim (see README).
	$(NETNS_RUN) go run ./e2e/localdemo --shim $(BIN)/plexus --cni-bin $(CNI_BIN) --assets $(K8S_BIN)

.PHONY: clean
clean: ## Remove build outputs (keeps the .cache of long builds).
	rm -rf $(BIN)
