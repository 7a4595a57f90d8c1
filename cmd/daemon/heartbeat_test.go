package daemon_test

import (
	"strings"
	"testing"
	"time"
)

// A running daemon refreshes its node's heartbeat while nothing else
// changes; once it is gone the heartbeat stays where it was, so a reader
// of the status (HEARTBEAT in kubectl get) tells a node no daemon serves,
// whatever Ready last said.
func TestTheHeartbeatShowsTheDaemonAlive(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.opts.StatusHeartbeat = time.Second })
	f.serving()
	first := f.nodeStatus().Status.LastHeartbeatTime
	if first == nil {
		t.Fatal("no lastHeartbeatTime once the node is Ready")
	}
	f.eventually("the heartbeat refreshed with nothing else changing", func() bool {
		hb := f.nodeStatus().Status.LastHeartbeatTime
		return hb != nil && hb.After(first.Time)
	})
	if out := f.kubectl("get", "nodenetworkstatuses"); !strings.Contains(out, "HEARTBEAT") {
		t.Errorf("kubectl get lacks the HEARTBEAT column:\n%s", out)
	}

	f.stopDaemon()
	last := f.nodeStatus().Status.LastHeartbeatTime
	// Three periods: a daemon still writing would have refreshed it.
	time.Sleep(3 * time.Second)
	if now := f.nodeStatus().Status.LastHeartbeatTime; now == nil || !now.Equal(last) {
		t.Errorf("heartbeat moved from %v to %v with the daemon stopped", last, now)
	}
}
