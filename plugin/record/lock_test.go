package record_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// holders counts who is inside a critical section; more than one at once is
// a broken lock.
type holders struct {
	inside, max atomic.Int32
}

func (h *holders) enter() {
	n := h.inside.Add(1)
	for {
		m := h.max.Load()
		if n <= m || h.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (h *holders) leave() { h.inside.Add(-1) }

func TestLockMutualExclusion(t *testing.T) {
	tests := []struct {
		name string
		// forget removes the lock file at the end of each critical
		// section, as DEL does, so waiters keep landing on removed files.
		forget bool
	}{
		{"same file", false},
		{"file forgotten by every holder", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			const id = "sandbox"
			var h holders
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 15; i++ {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						unlock, err := s.Lock(ctx, id)
						cancel()
						if err != nil {
							t.Errorf("Lock: %v", err)
							return
						}
						h.enter()
						time.Sleep(200 * time.Microsecond)
						h.leave()
						if tt.forget {
							s.ForgetLock(id)
						}
						unlock()
					}
				}()
			}
			wg.Wait()
			if m := h.max.Load(); m != 1 {
				t.Errorf("%d holders at once, want 1", m)
			}
		})
	}
}

func TestLockHeldTimesOut(t *testing.T) {
	s := newStore(t)
	unlock, err := s.Lock(t.Context(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}},
		{"deadline passes while waiting", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 30*time.Millisecond)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			unlock2, err := s.Lock(ctx, "c1")
			if err == nil {
				unlock2()
				t.Fatal("second Lock succeeded while the first is held")
			}
			if !strings.Contains(err.Error(), "another operation holds") || !strings.Contains(err.Error(), "c1") {
				t.Errorf("error %q does not say the sandbox is held by another", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Lock gave up after %v", d)
			}
		})
	}
}

func TestLockReleaseLetsNextIn(t *testing.T) {
	s := newStore(t)
	unlock, err := s.Lock(t.Context(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	unlock, err = s.Lock(ctx, "c1")
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	unlock()
}

func TestLockDifferentIDs(t *testing.T) {
	s := newStore(t)
	unlock, err := s.Lock(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	unlockB, err := s.Lock(ctx, "b")
	if err != nil {
		t.Fatalf("lock of b blocked by a: %v", err)
	}
	unlockB()
}

func TestLockBadID(t *testing.T) {
	s := newStore(t)
	for _, id := range []string{"", "../x", "a/b", ".hidden"} {
		if unlock, err := s.Lock(t.Context(), id); err == nil {
			unlock()
			t.Errorf("Lock(%q) succeeded", id)
		}
	}
	// ForgetLock of a bad id must not remove anything outside locks/.
	victim := filepath.Join(s.Dir, "victim")
	if err := os.WriteFile(victim, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s.ForgetLock("../victim")
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("ForgetLock(../victim): %v", err)
	}
}

// A waiter blocked on a lock file that its holder forgets must end up
// holding the lock on the new file at the path, or two callers could hold
// "the" lock at once.
func TestForgetLockWhileHeld(t *testing.T) {
	s := newStore(t)
	const id = "c1"
	lockFile := filepath.Join(s.Dir, "locks", id)

	unlock, err := s.Lock(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	type locked struct {
		unlock func()
		err    error
	}
	got := make(chan locked, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		u, err := s.Lock(ctx, id)
		got <- locked{u, err}
	}()

	// Let the waiter open the current file and start polling it.
	select {
	case l := <-got:
		t.Fatalf("waiter got the lock while it was held: %v", l.err)
	case <-time.After(100 * time.Millisecond):
	}
	s.ForgetLock(id)
	if _, err := os.Stat(lockFile); !os.IsNotExist(err) {
		t.Fatalf("lock file after ForgetLock: %v, want it gone", err)
	}
	unlock()

	var l locked
	select {
	case l = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never got the lock")
	}
	if l.err != nil {
		t.Fatalf("waiter: %v", l.err)
	}
	defer l.unlock()
	if _, err := os.Stat(lockFile); err != nil {
		t.Errorf("lock file while the waiter holds it: %v", err)
	}
	// The waiter's lock is on the file now at the path: a newcomer waits.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if u, err := s.Lock(ctx, id); err == nil {
		u()
		t.Error("a newcomer got the lock while the waiter holds it")
	}
}
