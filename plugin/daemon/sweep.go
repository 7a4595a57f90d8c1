package daemon

import (
	"context"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	k8stypes "k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/record"
)

// Sweep tears down the attachments of sandboxes that are gone although
// plexus never got their DEL: pods deleted while plexus was not installed
// (their runtime called the default network alone) or whose runtime lost
// track of them. Their extra networks' addresses would stay allocated
// forever. A record counts as stale only when both its pod is gone from
// this node (or is another pod by that name) and its network namespace no
// longer exists, so a pod whose sandbox is alive, or whose teardown is
// still under way, is never touched. It returns how many sandboxes it
// tore down. The daemon runs it once its caches synced and then every
// Options.SweepEvery.
func (d *Daemon) Sweep(ctx context.Context) int {
	log := ctrl.Log.WithName("plexus").WithName("sweep")
	ids, err := d.Engine.Store.IDs()
	if err != nil {
		log.Error(err, "listing records")
		return 0
	}
	swept := 0
	for _, id := range ids {
		rec, err := d.Engine.Store.Load(id)
		if err != nil || !d.stale(ctx, rec) {
			continue
		}
		if err := d.Engine.Del(ctx, &plugin.Request{Command: "DEL", ContainerID: id}); err != nil {
			log.Error(err, "tearing down a sandbox that is gone; trying again later", "containerID", id, "pod", rec.Pod.Namespace+"/"+rec.Pod.Name)
			continue
		}
		swept++
		log.Info("tore down a sandbox that is gone without a DEL", "containerID", id,
			"pod", rec.Pod.Namespace+"/"+rec.Pod.Name, "uid", rec.Pod.UID, "netns", rec.NetNS, "attachments", len(rec.Attachments))
	}
	return swept
}

// sweepLoop sweeps at start and every sweepEvery; zero sweeps at start only.
func (d *Daemon) sweepLoop(ctx context.Context) error {
	for {
		d.Sweep(ctx)
		if d.sweepEvery <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d.sweepEvery):
		}
	}
}

// stale: the record's pod is not on this node any more and its netns is
// gone. Any doubt (no pod reference, a cache error) keeps the record.
func (d *Daemon) stale(ctx context.Context, rec *record.Record) bool {
	if rec.Pod.UID == "" {
		return false
	}
	if rec.NetNS != "" {
		if _, err := os.Stat(rec.NetNS); !os.IsNotExist(err) {
			return false
		}
	}
	pod := &corev1.Pod{}
	err := d.Manager.GetCache().Get(ctx, k8stypes.NamespacedName{Namespace: rec.Pod.Namespace, Name: rec.Pod.Name}, pod)
	switch {
	case apierrors.IsNotFound(err):
		return true
	case err != nil:
		return false
	}
	return string(pod.UID) != rec.Pod.UID
}
