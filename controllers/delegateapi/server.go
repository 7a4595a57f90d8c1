// Package delegateapi serves Multus's delegate API on a unix socket, so
// that clusters running the dynamic networks controller (which KubeVirt
// uses to hot-plug a VM's interfaces) can keep it with plexus in Multus's
// place: POST /delegate adds or removes one interface of a running pod
// through the core's Engine.Attach and Engine.Detach, GET /healthz says
// the server is there.
//
// The protocol is the one the controller's client speaks (its
// pkg/multuscni and Multus's pkg/server/api): a JSON Request, 200 with
// {"Result": <CNI 1.0.0 result>} for an ADD (an empty body for a DEL), and
// any other status with an error text. plexus's statuses:
//
//	400  a bad request; the text names the field (env.CNI_IFNAME, config, ...)
//	404  the pod in CNI_ARGS has no live sandbox on this node (ADD only; a
//	     DEL of a pod without one has nothing to remove and answers 200)
//	409  CNI_CONTAINERID is not the pod's live sandbox, or the interface is
//	     the pod's default network or held by another network
//	500  the delegate failed (its CNI error's text); the ADD was rolled back
//	504  the call ran past --operation-timeout; the ADD was rolled back
//
// An attachment made here joins the sandbox's record (origin
// record.OriginDelegateAPI): the pod's own DEL releases it. The caller
// writes the pod's network-status and Events itself, so neither call
// publishes a status (KeepStatus).
package delegateapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/plexus-cni/plexus/controllers/cniserver"
	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// DefaultSocket is Multus's socket path, where the dynamic networks
// controller looks by default (its multusSocketPath).
const DefaultSocket = "/run/multus/multus.sock"

// Paths of the API.
const (
	DelegatePath = "/delegate"
	HealthPath   = "/healthz"
)

// maxRequest bounds a request body; a CNI config is a few KiB.
const maxRequest = 4 << 20

var callDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "plexus_delegate_api_duration_seconds",
	Help:    "Time the daemon took to serve a delegate API call (the dynamic networks controller's), by command and HTTP status.",
	Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
}, []string{"command", "code"})

func init() { metrics.Registry.MustRegister(callDuration) }

// Engine is what the server asks of the core (plugin.Engine).
type Engine interface {
	Attach(ctx context.Context, req *plugin.AttachRequest) (*current.Result, error)
	Detach(ctx context.Context, containerID, ifname string, keepStatus bool) error
	Sandbox(pod record.PodRef) (*record.Record, error)
}

// Activity counts what the API did, for the node's NodeNetworkStatus
// (controllers.HotplugActivity): attachments added and removed, and the
// adds and removes that failed (not the requests refused as bad).
type Activity interface {
	Added()
	Removed()
	Failed(pod, network, ifname, message string)
}

// Server is a controller-runtime Runnable serving the delegate API.
type Server struct {
	Engine Engine
	// Socket is the unix socket's path (DefaultSocket in production). Its
	// directory is created (0700) if missing; a stale socket file is
	// replaced, but a socket some other server still answers on is not.
	Socket string
	// Timeout is the deadline of one call, rollback included; the
	// client hanging up does not cut it short.
	Timeout time.Duration
	// Pods (this node's pod cache) and Live (the API server, for a cache
	// that has not seen the annotation change yet) are read to name an
	// added network as the caller does in its network-status: the
	// "namespace/name" of the pod's networks annotation element on the
	// interface. Nil, or no such element, takes the config's name.
	Pods, Live client.Reader
	// Activity, if set, is told of each attachment added or removed and
	// of each that failed.
	Activity Activity

	listening atomic.Bool
}

// NeedLeaderElection is false: every node serves its own pods.
func (s *Server) NeedLeaderElection() bool { return false }

// Ready is a readiness check: the socket is being served.
func (s *Server) Ready(*http.Request) error {
	if !s.listening.Load() {
		return fmt.Errorf("delegate API socket %s not served yet", s.Socket)
	}
	return nil
}

// Start serves the socket until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	ln, err := listen(s.Socket)
	if err != nil {
		return err
	}
	log := ctrl.LoggerFrom(ctx).WithName("delegateapi")
	log.Info("Serving the delegate API (dynamic networks controller)", "socket", s.Socket)
	return cniserver.Serve(ctrl.LoggerInto(ctx, log), ln, s.Handler(), s.Timeout, &s.listening)
}

// listen makes the socket at path, root-only (0600) from its first moment:
// it is bound under a temporary name, restricted, then renamed into place.
func listen(path string) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("--delegate-api-socket %q: want an absolute path (Multus's is %s)", path, DefaultSocket)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("delegate API socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", tmp, err)
	}
	// The listener would unlink tmp on Close; after the rename it must
	// leave the socket alone (removeStale cleans it at the next start).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("delegate API socket: %w", err)
	}
	return ln, nil
}

// removeStale removes a socket left at path by a previous daemon. A live
// one (Multus's daemon still running) or a file that is not a socket is
// an error: plexus must not take another server's place silently.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("--delegate-api-socket %s exists and is not a socket (%s): remove it, or set the path (chart value hotplug.delegateAPISocket) elsewhere", path, fi.Mode().Type())
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("another server answers on %s (Multus's daemon?): plexus would take its place; stop it (uninstall Multus thick), or set --delegate-api-socket (chart value hotplug.delegateAPISocket) to another path", path)
	}
	return os.Remove(path)
}

// Handler routes the API's two endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(HealthPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			http.Error(w, "GET "+HealthPath+" only", http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc(DelegatePath, s.serveDelegate)
	return mux
}

func (s *Server) serveDelegate(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		http.Error(w, "POST "+DelegatePath+" only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
	if err == nil && len(body) > maxRequest {
		err = fmt.Errorf("larger than %d bytes", maxRequest)
	}
	if err != nil {
		s.answer(w, "", start, nil, badRequest("body: %v", err))
		return
	}
	c, herr := parse(body)
	if herr != nil {
		s.answer(w, "", start, nil, herr)
		return
	}
	// The call's deadline is the daemon's, not the client's connection's:
	// a client giving up must not cut a rollback short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.Timeout)
	defer cancel()
	log := ctrl.LoggerFrom(ctx).WithValues("command", c.command, "pod", plugin.PodRef(c.pod), "containerID", c.containerID)
	ctx = ctrl.LoggerInto(ctx, log)
	// The engine names the network and the interface on its own lines.
	log = log.WithValues("network", plugin.NetworkRef(c.configName), "interface", c.ifName)
	var out []byte
	if c.command == CmdAdd {
		out, herr = s.add(ctx, c)
	} else {
		herr = s.del(ctx, c)
	}
	s.answer(w, c.command, start, out, herr)
	if herr != nil {
		// The error ends here: logged once, and answered to the client.
		log.Error(errors.New(herr.msg), "Delegate API call refused or failed", "status", herr.status)
		return
	}
	log.V(1).Info("Delegate API call done", "duration", time.Since(start).String())
}

func (s *Server) answer(w http.ResponseWriter, command string, start time.Time, body []byte, herr *httpError) {
	code := http.StatusOK
	if herr != nil {
		code = herr.status
		http.Error(w, herr.msg, code)
	} else {
		if body != nil {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(code)
		_, _ = w.Write(body)
	}
	if command == "" {
		command = "invalid"
	}
	callDuration.WithLabelValues(command, fmt.Sprint(code)).Observe(time.Since(start).Seconds())
}

// sandbox finds the live sandbox the call names: the pod's (by its UID),
// which must be CNI_CONTAINERID. A nil record with a nil error is a pod
// without one.
func (s *Server) sandbox(c *call) (*record.Record, *httpError) {
	rec, err := s.Engine.Sandbox(c.pod)
	switch {
	case errors.Is(err, plugin.ErrNoSandbox):
		return nil, nil
	case err != nil:
		return nil, &httpError{http.StatusInternalServerError, fmt.Sprintf("pod %s: reading its sandbox's record: %v", podName(c.pod), err)}
	case rec.ContainerID != c.containerID:
		return nil, &httpError{http.StatusConflict, fmt.Sprintf(
			"env.CNI_CONTAINERID %s is not the live sandbox of pod %s (uid %s, from env.CNI_ARGS), which is %s: send the pod's current sandbox id, and the pod of that sandbox",
			c.containerID, podName(c.pod), c.pod.UID, rec.ContainerID)}
	}
	return rec, nil
}

// held checks what the sandbox has on the call's interface: nil (free, or
// the same network), or a 409 for the default network or another network.
func held(rec *record.Record, c *call) (*record.Attachment, *httpError) {
	for i := range rec.Attachments {
		a := &rec.Attachments[i]
		if a.IfName != c.ifName {
			continue
		}
		if a.Default {
			return a, &httpError{http.StatusConflict, fmt.Sprintf(
				"env.CNI_IFNAME %s of pod %s is its default network (%s), which the delegate API neither adds nor removes: pick another interface name",
				c.ifName, podName(c.pod), a.Network)}
		}
		if !sameNetwork(a, c.configName) {
			return a, &httpError{http.StatusConflict, fmt.Sprintf(
				"env.CNI_IFNAME %s of pod %s is attached to network %s, not %q (config.name): remove that element from the pod's networks annotation first, or pick another interface name",
				c.ifName, podName(c.pod), a.Network, c.configName)}
		}
		return a, nil
	}
	return nil, nil
}

// sameNetwork tells whether attachment a is of the network a delegate
// config names: plexus records a definition's network as "namespace/name",
// and the controller fills the config's name with the definition's name
// when the config has none.
func sameNetwork(a *record.Attachment, name string) bool {
	if a.Network == name {
		return true
	}
	if _, n, ok := strings.Cut(a.Network, "/"); ok && n == name {
		return true
	}
	var conf struct {
		Name string `json:"name"`
	}
	return json.Unmarshal(a.Config, &conf) == nil && conf.Name == name
}

func (s *Server) add(ctx context.Context, c *call) ([]byte, *httpError) {
	rec, herr := s.sandbox(c)
	if herr != nil {
		return nil, herr
	}
	if rec == nil {
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf(
			"pod %s (uid %s, from env.CNI_ARGS) has no live sandbox on this node, so env.CNI_CONTAINERID %s is unknown: the pod is not running here, not started yet, or being torn down",
			podName(c.pod), c.pod.UID, c.containerID)}
	}
	a, herr := held(rec, c)
	if herr != nil {
		return nil, herr
	}
	res, err := s.Engine.Attach(ctx, &plugin.AttachRequest{
		ContainerID: c.containerID, Pod: c.pod, Network: s.networkOf(ctx, c),
		Config: c.config, IfName: c.ifName, Args: c.args, Attributes: c.attributes,
		Origin: record.OriginDelegateAPI, KeepStatus: true,
	})
	if err != nil {
		herr := failed(ctx, c, err)
		s.failed(c, herr)
		return nil, herr
	}
	if a == nil && s.Activity != nil {
		s.Activity.Added()
	}
	versioned, err := res.GetAsVersion("1.0.0")
	if err != nil {
		return nil, &httpError{http.StatusInternalServerError, fmt.Sprintf("pod %s, network %q: result: %v", podName(c.pod), c.configName, err)}
	}
	result, err := json.Marshal(versioned)
	if err == nil {
		result, err = json.Marshal(Response{Result: result})
	}
	if err != nil {
		return nil, &httpError{http.StatusInternalServerError, fmt.Sprintf("pod %s, network %q: encoding the result: %v", podName(c.pod), c.configName, err)}
	}
	return result, nil
}

// networkOf is the "namespace/name" of the pod's networks annotation
// element on the call's interface, the name the dynamic networks
// controller gives the network in the status it writes; "" when there is
// none (another client, or a pod that no longer asks for it).
func (s *Server) networkOf(ctx context.Context, c *call) string {
	key := types.NamespacedName{Namespace: c.pod.Namespace, Name: c.pod.Name}
	for _, r := range []client.Reader{s.Pods, s.Live} {
		if r == nil {
			continue
		}
		pod := &corev1.Pod{}
		if err := r.Get(ctx, key, pod); err != nil || string(pod.UID) != c.pod.UID {
			continue
		}
		elements, err := selection.Parse(pod.Annotations[nadv1.NetworkAttachmentAnnot], pod.Namespace)
		if err != nil {
			continue
		}
		for _, e := range elements {
			if e.Interface == c.ifName {
				return e.Namespace + "/" + e.Name
			}
		}
	}
	return ""
}

func (s *Server) del(ctx context.Context, c *call) *httpError {
	rec, herr := s.sandbox(c)
	if herr != nil || rec == nil {
		// No live sandbox: nothing of it is left to remove.
		return herr
	}
	a, herr := held(rec, c)
	if herr != nil || a == nil {
		// Not attached: DEL is idempotent.
		return herr
	}
	if err := s.Engine.Detach(ctx, c.containerID, c.ifName, true); err != nil {
		herr := failed(ctx, c, err)
		s.failed(c, herr)
		return herr
	}
	if s.Activity != nil {
		s.Activity.Removed()
	}
	return nil
}

func (s *Server) failed(c *call, herr *httpError) {
	if s.Activity != nil {
		s.Activity.Failed(podName(c.pod), c.configName, c.ifName, herr.msg)
	}
}

// failed maps the core's error to a status.
func failed(ctx context.Context, c *call, err error) *httpError {
	what := fmt.Sprintf("%s of interface %s (network %q) on pod %s", c.command, c.ifName, c.configName, podName(c.pod))
	switch {
	case errors.Is(err, plugin.ErrNoSandbox):
		return &httpError{http.StatusNotFound, fmt.Sprintf("%s: %v: the sandbox went away meanwhile", what, err)}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &httpError{http.StatusGatewayTimeout, fmt.Sprintf("%s: not done within --operation-timeout: %v", what, err)}
	}
	cniErr := delegate.CNIError(err)
	msg := cniErr.Msg
	if cniErr.Details != "" {
		msg += ": " + cniErr.Details
	}
	return &httpError{http.StatusInternalServerError, fmt.Sprintf("%s: %s (CNI error code %d)", what, msg, cniErr.Code)}
}

func podName(p record.PodRef) string { return p.Namespace + "/" + p.Name }
