package plugin

import (
	"context"
	"errors"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/plexus-cni/plexus/plugin/record"
)

func (e *Engine) attachOne(ctx context.Context, req *AttachRequest) (*current.Result, error) {
	return nil, errors.New("STUB: attach not implemented yet")
}

func (e *Engine) detachOne(ctx context.Context, containerID, ifname string, keepStatus bool) error {
	return errors.New("STUB: detach not implemented yet")
}

func (e *Engine) sandboxOf(pod record.PodRef) (*record.Record, error) {
	return nil, errors.New("STUB: sandbox index not implemented yet")
}
