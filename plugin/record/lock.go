package record

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Lock takes the per-sandbox lock of a container id and returns its release.
// It is an flock on a file under the store, so it holds across processes:
// the daemon and a shim tearing down on its own never overlap on one
// sandbox. It waits until ctx is done.
func (s *Store) Lock(ctx context.Context, id string) (func(), error) {
	if err := CheckContainerID(id); err != nil {
		return nil, err
	}
	path := filepath.Join(s.Dir, "locks", id)
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", id, err)
		}
		if err := flockContext(ctx, f); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", id, err)
		}
		// The holder before us may have removed the file after we opened it;
		// then our lock is on an orphan and another caller may lock a new
		// file at the same path. Only a lock on the file still at the path
		// counts.
		if same(f, path) {
			return func() { f.Close() }, nil
		}
		f.Close()
	}
}

// ForgetLock removes the lock file of a sandbox whose DEL is done, so that
// lock files do not pile up on the node. Call it while holding the lock:
// whoever waits on the removed file then retries on a fresh one.
func (s *Store) ForgetLock(id string) {
	if CheckContainerID(id) == nil {
		os.Remove(filepath.Join(s.Dir, "locks", id))
	}
}

func same(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	return os.SameFile(a, b)
}

// flockContext polls a non-blocking flock, since a blocking one cannot be
// interrupted by a context.
func flockContext(ctx context.Context, f *os.File) error {
	delay := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("another operation holds this sandbox: %w", ctx.Err())
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}
