package bench

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"time"
)

// ProfileAdds takes a CPU profile of this process while plexus serves adds
// ADDs (each followed by its DEL) of one sandbox, after a warmup. The
// daemon runs in this process with its goroutines labelled plexus=daemon:
// `go tool pprof -tagfocus=plexus=daemon` keeps the daemon's samples
// only, and `-ignore='\(\*Engine\)\.Del$'` drops its DELs.
func ProfileAdds(ctx context.Context, n *Node, sb *Sandbox, adds int, path string) (time.Duration, error) {
	for i := 0; i < 10; i++ {
		if err := addDel(n.plexusSide(ctx, sb, i == 0), fmt.Sprintf("warm-%d", i)); err != nil {
			return 0, err
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return 0, err
	}
	start := time.Now()
	for i := 0; i < adds; i++ {
		if err := addDel(n.plexusSide(ctx, sb, false), fmt.Sprintf("prof-%d", i)); err != nil {
			pprof.StopCPUProfile()
			return 0, err
		}
	}
	took := time.Since(start)
	pprof.StopCPUProfile()
	return took, f.Close()
}

func addDel(s *side, id string) error {
	if err := s.add(id); err != nil {
		return err
	}
	return s.del(id)
}
