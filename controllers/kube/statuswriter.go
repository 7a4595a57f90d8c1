package kube

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/go-logr/logr"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/record"
)

// StatusWriter writes pods' network-status annotations off the CNI path:
// ADD hands it the status and returns; Delay later a few workers patch,
// one merge patch per pod touching only that annotation, retried with
// backoff while the API server is away, and dropped when the pod or its
// sandbox is gone.
// The latest status of a pod wins: a burst of ADDs for one pod costs one
// patch.
type StatusWriter struct {
	Client client.Client // writes pods/status
	Cache  client.Reader // this node's pods, to skip patches already applied
	// Log is for Publish, which the core calls without a context; the
	// workers log with the logger of Start's context.
	Log logr.Logger
	// Written, if set, is called after each successful patch with the
	// time since the status was published (a benchmark figure).
	Written func(pod record.PodRef, latency time.Duration)
	// Delay is how long after Publish a status is patched: 0 means
	// DefaultStatusDelay, a negative value no delay.
	Delay time.Duration
	// Current, if set, rebuilds a pod's status from its sandbox's record
	// at the moment it is written, instead of writing the value Publish
	// was given: an attachment added or removed while the status waited
	// (the delegate API's, which publishes nothing, its client writing
	// the status itself) is neither dropped nor brought back by a stale
	// write. found is false when the sandbox has no record any more: the
	// status is dropped.
	Current func(containerID string) (status []nadv1.NetworkStatus, found bool, err error)

	once    sync.Once
	queue   workqueue.TypedRateLimitingInterface[k8stypes.NamespacedName]
	mu      sync.Mutex
	pending map[k8stypes.NamespacedName]*pendingStatus
}

// DefaultStatusDelay lets the ADD that published a status return to the
// runtime before the patch (JSON, TLS, the API server's answer) competes
// with it for the node's CPUs: 1.2 ms p50 of ADD overhead on a 2-core node
// (docs/benchmarks.md, run 6). A DEL within the delay retracts the status
// before any patch.
const DefaultStatusDelay = 20 * time.Millisecond

type pendingStatus struct {
	ref         record.PodRef
	containerID string
	value       string
	published   time.Time
}

func (w *StatusWriter) init() {
	w.once.Do(func() {
		w.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[k8stypes.NamespacedName](50*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[k8stypes.NamespacedName]{Name: "plexus_network_status"})
		w.pending = map[k8stypes.NamespacedName]*pendingStatus{}
	})
}

// Publish queues a pod's status.
func (w *StatusWriter) Publish(ref record.PodRef, containerID string, status []nadv1.NetworkStatus) {
	w.init()
	data, err := json.MarshalIndent(status, "", "    ")
	if err != nil {
		w.Log.Error(err, "Encoding network-status", "pod", plugin.PodRef(ref), "containerID", containerID)
		return
	}
	key := k8stypes.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
	w.mu.Lock()
	w.pending[key] = &pendingStatus{ref: ref, containerID: containerID, value: string(data), published: time.Now()}
	w.mu.Unlock()
	switch {
	case w.Delay < 0:
		w.queue.Add(key)
	case w.Delay == 0:
		w.queue.AddAfter(key, DefaultStatusDelay)
	default:
		w.queue.AddAfter(key, w.Delay)
	}
}

// Pending counts the statuses not written yet.
func (w *StatusWriter) Pending() int {
	w.init()
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// Retract drops an unwritten status of a sandbox that is gone.
func (w *StatusWriter) Retract(containerID string) {
	w.init()
	w.mu.Lock()
	defer w.mu.Unlock()
	for key, p := range w.pending {
		if p.containerID == containerID {
			delete(w.pending, key)
		}
	}
}

// Start runs the workers until ctx ends (a controller-runtime Runnable).
func (w *StatusWriter) Start(ctx context.Context) error {
	w.init()
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithName("status"))
	const workers = 2
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	w.queue.ShutDown()
	wg.Wait()
	return nil
}

// NeedLeaderElection is false: every node's daemon writes its own pods.
func (w *StatusWriter) NeedLeaderElection() bool { return false }

func (w *StatusWriter) next(ctx context.Context) bool {
	key, shutdown := w.queue.Get()
	if shutdown {
		return false
	}
	defer w.queue.Done(key)
	w.mu.Lock()
	p := w.pending[key]
	w.mu.Unlock()
	if p == nil {
		w.queue.Forget(key)
		return true
	}
	log := ctrl.LoggerFrom(ctx).WithValues("pod", plugin.PodRef(p.ref), "containerID", p.containerID)
	err := w.write(ctx, key, p)
	switch {
	case err == nil:
		w.queue.Forget(key)
		w.mu.Lock()
		if w.pending[key] == p {
			delete(w.pending, key)
		} else if w.pending[key] != nil {
			// Published again while this one was being written: write
			// that one too.
			w.queue.Add(key)
		}
		w.mu.Unlock()
		if w.Written != nil {
			w.Written(p.ref, time.Since(p.published))
		}
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err) || apierrors.IsInvalid(err):
		// Gone, or a new pod of the same name (the UID precondition).
		log.V(1).Info("Dropping network-status of a pod that is gone", "podUID", p.ref.UID, "reason", err.Error())
		w.queue.Forget(key)
		w.Retract(p.containerID)
	default:
		log.Info("Network-status not written yet, retrying", "reason", err.Error(), "attempts", w.queue.NumRequeues(key)+1)
		w.queue.AddRateLimited(key)
	}
	return true
}

// errSandboxGone drops a status whose sandbox's record is gone.
var errSandboxGone = apierrors.NewNotFound(corev1.Resource("pods"), "the sandbox's record")

func (w *StatusWriter) write(ctx context.Context, key k8stypes.NamespacedName, p *pendingStatus) error {
	value := p.value
	if w.Current != nil {
		status, found, err := w.Current(p.containerID)
		if err != nil {
			return err
		}
		if !found {
			return errSandboxGone
		}
		data, err := json.MarshalIndent(status, "", "    ")
		if err != nil {
			return err
		}
		value = string(data)
	}
	if w.Cache != nil {
		cached := &corev1.Pod{}
		if err := w.Cache.Get(ctx, key, cached); err == nil && string(cached.UID) == p.ref.UID &&
			cached.Annotations[nadv1.NetworkStatusAnnot] == value {
			return nil
		}
	}
	patch, err := json.Marshal(map[string]interface{}{
		"metadata": map[string]interface{}{
			// The UID makes the patch fail on a recreated pod of the same name.
			"uid":         p.ref.UID,
			"annotations": map[string]string{nadv1.NetworkStatusAnnot: value},
		},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	return w.Client.Status().Patch(ctx, pod, client.RawPatch(k8stypes.MergePatchType, patch))
}
