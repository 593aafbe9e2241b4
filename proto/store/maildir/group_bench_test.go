package maildir

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"qbox/proto"
)

// storeRun delivers n messages of size bytes (one recipient each) into a
// fresh store from writers goroutines at once and returns messages per
// second and the median and 99th percentile of one delivery's time.
func storeRun(b *testing.B, alone bool, writers, n, size int) (rate float64, p50, p99 time.Duration) {
	b.Helper()
	s, err := NewStore(filepath.Join(b.TempDir(), "Maildir"))
	if err != nil {
		b.Fatal(err)
	}
	s.Logger = slog.New(slog.DiscardHandler)
	s.alone = alone
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				t0 := time.Now()
				d, err := s.Begin(b.Context(), testPeer, int64(size))
				if err != nil {
					b.Error(err)
					return
				}
				d.Write(msg)
				r := d.Commit(b.Context(), proto.Envelope{Sender: "s@example.test", Recipients: []string{fmt.Sprintf("r%d@example.test", i)}})
				if len(r) != 1 || r[0].Status != proto.OK {
					b.Errorf("delivery %d: %v", i, r)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if b.Failed() {
		b.FailNow()
	}
	slices.Sort(lat)
	return float64(n) / elapsed.Seconds(), lat[n/2], lat[n*99/100]
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// Issue 26, point 2: the store's group commit beside the same store
// committing each delivery alone (its way before: every delivery its own
// fsync of new/), in the same run on the same disk, by 1 and by 20
// concurrent writers of 2 KB messages: messages per second and one
// delivery's median and 99th-percentile time (ms). Three rounds, the two
// ways taking turns to go first, medians reported.
func BenchmarkStoreGroupCommit(b *testing.B) {
	const rounds, size = 3, 2000
	type fig struct{ rate, p50, p99 []float64 }
	figs := map[string]*fig{}
	run := func(name string, alone bool, writers, n int) {
		rate, p50, p99 := storeRun(b, alone, writers, n, size)
		f := figs[name]
		if f == nil {
			f = &fig{}
			figs[name] = f
		}
		f.rate = append(f.rate, rate)
		f.p50 = append(f.p50, float64(p50)/1e6)
		f.p99 = append(f.p99, float64(p99)/1e6)
	}
	for b.Loop() {
		for r := range rounds {
			for _, w := range []int{1, 20} {
				n := 200
				if w > 1 {
					n = 2000
				}
				if r%2 == 0 {
					run(fmt.Sprintf("alone-%d", w), true, w, n)
					run(fmt.Sprintf("group-%d", w), false, w, n)
				} else {
					run(fmt.Sprintf("group-%d", w), false, w, n)
					run(fmt.Sprintf("alone-%d", w), true, w, n)
				}
			}
		}
	}
	for name, f := range figs {
		b.ReportMetric(medianOf(f.rate), name+"-msgs/s")
		b.ReportMetric(medianOf(f.p50), name+"-p50-ms")
		b.ReportMetric(medianOf(f.p99), name+"-p99-ms")
	}
	for _, w := range []string{"1", "20"} {
		b.ReportMetric(medianOf(figs["group-"+w].rate)/medianOf(figs["alone-"+w].rate), "group/alone-"+w)
	}
}
