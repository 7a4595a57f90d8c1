//go:build tools

// Package tools pins the whereabouts IPAM plugin that
// hack/build-whereabouts.sh builds, so that `go mod tidy` keeps every
// dependency it needs in go.sum.
package tools

import (
	_ "github.com/k8snetworkplumbingwg/whereabouts/cmd"
)
