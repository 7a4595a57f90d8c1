// Package cniserver serves the shim's CNI calls on the node's unix socket
// and runs them through the core, one deadline per call.
package cniserver

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
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/shimapi"
)

var opDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "plexus_cni_operation_duration_seconds",
	Help:    "Time the daemon took to serve a CNI call, by command and outcome.",
	Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
}, []string{"command", "result"})

func init() { metrics.Registry.MustRegister(opDuration) }

// maxRequest bounds a request body; a CNI config is a few KiB.
const maxRequest = 4 << 20

// Server is a controller-runtime Runnable serving CNI calls.
type Server struct {
	Engine  *plugin.Engine
	Socket  string
	Timeout time.Duration

	listening atomic.Bool
}

// NeedLeaderElection is false: every node serves its own pods.
func (s *Server) NeedLeaderElection() bool { return false }

// Ready is a readiness check: the socket is being served.
func (s *Server) Ready(*http.Request) error {
	if !s.listening.Load() {
		return errors.New("CNI socket not served yet")
	}
	return nil
}

// Start listens on the socket until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.Socket), 0o700); err != nil {
		return err
	}
	// A socket file left by a previous daemon would make Listen fail.
	if err := os.Remove(s.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ln, err := net.Listen("unix", s.Socket)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.Socket, err)
	}
	if err := os.Chmod(s.Socket, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(shimapi.Path, s)
	log := ctrl.LoggerFrom(ctx).WithName("cni")
	log.Info("Serving CNI calls", "socket", s.Socket)
	return Serve(ctrl.LoggerInto(ctx, log), ln, mux, s.Timeout, &s.listening)
}

// Serve serves HTTP on ln until ctx ends, then shuts down, giving calls in
// flight up to drain to finish; listening is true while it serves (for a
// readiness check). The requests' contexts carry ctx's logger, not its end.
func Serve(ctx context.Context, ln net.Listener, handler http.Handler, drain time.Duration, listening *atomic.Bool) error {
	base := ctrl.LoggerInto(context.Background(), ctrl.LoggerFrom(ctx))
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	go func() {
		<-ctx.Done()
		listening.Store(false)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	listening.Store(true)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	req := &shimapi.Request{}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest))
	if err == nil {
		err = json.Unmarshal(body, req)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, types.NewError(types.ErrDecodingFailure, "bad request from shim: "+err.Error(), ""))
		return
	}
	// The call's deadline is the daemon's, not the shim's connection's: a
	// runtime giving up must not cut a rollback short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.Timeout)
	defer cancel()
	log := ctrl.LoggerFrom(ctx).WithValues("command", req.Command).WithValues(plugin.RequestLogValues(req)...)
	start := time.Now()
	res, err := s.Engine.Do(ctrl.LoggerInto(ctx, log), req)
	elapsed := time.Since(start)
	log = log.WithValues("duration", elapsed.String())
	if err != nil {
		// The error ends here: logged once, and answered to the shim.
		opDuration.WithLabelValues(req.Command, "error").Observe(elapsed.Seconds())
		cniErr := delegate.CNIError(err)
		log.Error(err, "CNI call failed", append([]any{"code", cniErr.Code}, plugin.ErrorLogValues(err)...)...)
		writeError(w, http.StatusInternalServerError, cniErr)
		return
	}
	opDuration.WithLabelValues(req.Command, "ok").Observe(elapsed.Seconds())
	log.V(1).Info("CNI call done")
	w.Header().Set("Content-Type", "application/json")
	if res != nil {
		if err := res.PrintTo(w); err != nil {
			log.Error(err, "Writing the result")
		}
	}
}

func writeError(w http.ResponseWriter, status int, e *types.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}
