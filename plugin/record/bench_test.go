package record_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/plexus-cni/plexus/plugin/record"
)

// BenchmarkSaveUpdateRemove is a plain ADD's and DEL's work on the store:
// Save (one fsync, the pod index link), Update (the results), Remove
// (the record, its results, the index link, the tombstone), on the
// machine's real file system.
func BenchmarkSaveUpdateRemove(b *testing.B) {
	s, err := record.NewStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		r := podRecord(fmt.Sprintf("c%d", i), fmt.Sprintf("uid-%d", i), time.Now())
		if err := s.Save(r); err != nil {
			b.Fatal(err)
		}
		r.Attachments[0].Result = []byte(`{"cniVersion":"1.0.0"}`)
		if err := s.Update(r); err != nil {
			b.Fatal(err)
		}
		if err := s.Remove(r.ContainerID); err != nil {
			b.Fatal(err)
		}
	}
}
