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

// Retrying a failed teardown: the first retry comes retryFirst after the
// failure, each later one twice as long after the previous, at most
// retryMax; the loop looks for due records every retryEvery.
const (
	retryFirst = 10 * time.Second
	retryMax   = 10 * time.Minute
	retryEvery = 10 * time.Second
)

// tombstoneTTL is how long a torn-down sandbox's tombstone is kept: far
// longer than a runtime takes to send its last DEL of it.
const tombstoneTTL = time.Hour

// Sweep tears down the attachments of sandboxes plexus still holds a
// record of although no teardown is coming, and returns how many it tore
// down. Two kinds:
//
//   - Sandboxes that are gone although plexus never got their DEL: pods
//     deleted while plexus was not installed (their runtime called the
//     default network alone) or whose runtime lost track of them. Their
//     extra networks' addresses would stay allocated forever. Such a
//     record counts as stale only when both its pod is gone from this node
//     (or is another pod by that name) and its network namespace no longer
//     exists, so a pod whose sandbox is alive, or whose teardown is still
//     under way, is never touched.
//   - Sandboxes whose teardown failed (record.Record.Failed: a failed
//     ADD's rollback, or a DEL a delegate refused): they are torn down
//     again whatever their pod's state, since the runtime has given them
//     up, once their backoff (retryDue) has passed. A record goes only
//     when every delegate's DEL succeeded.
//
// It also prunes the tombstones of sandboxes torn down over tombstoneTTL
// ago. The daemon runs it once its caches synced and then every
// Options.SweepEvery, and retries failed teardowns every retryEvery.
func (d *Daemon) Sweep(ctx context.Context) int {
	if _, err := d.Engine.Store.PruneTombstones(time.Now().Add(-tombstoneTTL)); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Pruning the tombstones of torn-down sandboxes")
	}
	return d.sweep(ctx, false)
}

// sweep is Sweep; failedOnly looks at records with a failed teardown only.
func (d *Daemon) sweep(ctx context.Context, failedOnly bool) int {
	ids, err := d.Engine.Store.IDs()
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing records")
		return 0
	}
	now := time.Now()
	swept := 0
	for _, id := range ids {
		rec, err := d.Engine.Store.Load(id)
		if err != nil {
			continue
		}
		why := ""
		switch {
		case rec.Failed != nil:
			if !retryDue(rec.Failed, now) {
				continue
			}
			why = "its teardown failed before"
		case !failedOnly && d.stale(ctx, rec):
			why = "its pod and netns are gone without a DEL"
		default:
			continue
		}
		log := ctrl.LoggerFrom(ctx).WithValues("containerID", id, "pod", plugin.PodRef(rec.Pod), "podUID", rec.Pod.UID,
			"netns", rec.NetNS, "attachments", len(rec.Attachments), "reason", why)
		// A netns still there gets its interfaces removed; one gone took
		// them along, and is not named, since some plugins fail on it.
		netns := rec.NetNS
		if _, err := os.Stat(netns); netns != "" && err != nil {
			netns = ""
		}
		if err := d.Engine.Del(ctrl.LoggerInto(ctx, log), &plugin.Request{Command: "DEL", ContainerID: id, NetNS: netns}); err != nil {
			log.Error(err, "Tearing down a sandbox; trying again later")
			continue
		}
		swept++
		log.Info("Tore down a sandbox")
	}
	return swept
}

// RetryBackoff is how long after its last failure a failed teardown is
// retried, after attempts failures: 10 s, doubling each time, at most
// 10 min.
func RetryBackoff(attempts int) time.Duration {
	wait := retryFirst
	for i := 1; i < attempts && wait < retryMax; i++ {
		wait *= 2
	}
	return min(wait, retryMax)
}

// retryDue: a failed teardown's backoff has passed.
func retryDue(f *record.Failure, now time.Time) bool {
	return !now.Before(f.Last.Add(RetryBackoff(f.Attempts)))
}

// sweepLoop sweeps at start and every sweepEvery, and retries failed
// teardowns in between; a zero sweepEvery sweeps at start only.
func (d *Daemon) sweepLoop(ctx context.Context) error {
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithName("sweep"))
	d.Sweep(ctx)
	if d.sweepEvery <= 0 {
		return nil
	}
	next := time.Now().Add(d.sweepEvery)
	tick := time.NewTicker(min(retryEvery, d.sweepEvery))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			if now.Before(next) {
				d.sweep(ctx, true)
				continue
			}
			next = now.Add(d.sweepEvery)
			d.Sweep(ctx)
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
