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
cni-plugins: $(CNI_BIN)/bridge ## Build the reference CNI plugins the tests delegate to (cached).
$(CNI_BIN)/bridge:
	@echo "building the reference CNI plugins $(CNI_VERSION) (first run only, ~1 min)..."
	mkdir -p $(CNI_BIN)
	GOBIN=$(CNI_BIN) go install github.com/containernetworking/plugins/plugins/...@$(CNI_VERSION)

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver from source and install etcd for envtest (cached).
	hack/build-k8s.sh $(K8S_BIN) kube-apiserver
	hack/install-etcd.sh $(K8S_BIN)

##@ Test

.PHONY: test
test: lint cni-plugins envtest-assets ## Run every test: real netns, real plugins, a real kube-apiserver (as root).
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
