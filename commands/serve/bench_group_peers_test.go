//go:build peers

package serve_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
)

// qmqpLatency sends n messages of size bytes from clients Go QMQP
// clients at once (a connection per message, as qmqp-source does) and
// returns messages per second and the median and 99th percentile of one
// message's time, from connect to K, in milliseconds.
func qmqpLatency(b *testing.B, addr string, clients, n, size int) (rate, p50, p99 float64) {
	b.Helper()
	msg := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"), size/64+1)[:size]
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &qmqp.Client{Servers: []string{addr}, Timeout: time.Minute}
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				t0 := time.Now()
				r, err := c.Send(context.Background(), proto.Envelope{Sender: "bench@example.test", Recipients: []string{"bench@example.test"}}, bytes.NewReader(msg), int64(len(msg)))
				if err != nil || r.Status != proto.OK {
					failed.Store(r.String() + " " + strconv.Quote(errString(err)))
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f != nil {
		b.Fatalf("QMQP into %s: %s", addr, f)
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return float64(n) / elapsed.Seconds(), ms(lat[n/2]), ms(lat[n*99/100])
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// qmqpSourceN runs qmqp-source -s 20 -m n -l size into addr and returns
// messages per second.
func qmqpSourceN(b *testing.B, addr string, n, size int) float64 {
	b.Helper()
	src := testpeer.Require(b, "qmqp-source", "postfix")
	start := time.Now()
	out, err := exec.Command(src, "-s", "20", "-m", strconv.Itoa(n), "-l", strconv.Itoa(size), "-f", "bench@example.test", "-t", "bench@example.test", addr).CombinedOutput()
	if err != nil {
		b.Fatalf("qmqp-source into %s: %v\n%s", addr, err, out)
	}
	return float64(n) / time.Since(start).Seconds()
}

// Issue 26, point 2, the group commit: qbox serve --maildir (fsync on)
// beside this disk's per-file durable ceiling (diskCeiling: 20 writers,
// each file fsync'd, linked and new/ fsync'd by itself), in the same
// run: QMQP from qmqp-source -s 20 and QMTP from flush-maildir (one
// connection, packages committed in parallel), each as a ratio to the
// ceiling (target >= 1.5); beside them Postfix's qmqp-sink, which stores
// nothing, under the same qmqp-source load: what the load generator and
// this machine's TCP reach at all, the bound on any QMQP server here.
// And one message's time (connect to K, median and 99th percentile) with
// 1 and with 20 Go QMQP clients at once.
//
// This virtual machine's disk changes speed by two or three times from
// one minute to the next, and serve (bound by the CPU) and the ceiling
// (bound by the disk) do not change together. So each figure is divided
// by the ceiling measured just before and just after it (their mean),
// the ceiling, QMQP, the ceiling, QMTP, the ceiling, qmqp-sink, the
// ceiling in every round, and the ratios are the medians of five rounds'
// ratios (the order of QMQP and QMTP alternates). And the same serve
// storing into a maildir in memory (tmpfs), under the same two loads:
// everything serve does but the disk's work, so the most a durable store
// can reach on this machine. Nothing is deleted until
// the end (see BenchmarkServeBesideDiskAndPostfix). proto/store/maildir's
// BenchmarkStoreGroupCommit sets the store's group commit beside the
// same store committing alone, the way before it.
func BenchmarkServeGroupCommit(b *testing.B) {
	const rounds, n, size = 5, 2000, 2000
	bin := testpeer.Binary(b)
	dir := b.TempDir()
	s := startServe(b, "--maildir", dir)
	// The same serve into a maildir in memory: every step but the disk's
	// work, the bound on what any durable store reaches here.
	mem := startServe(b, "--maildir", memoryDir(b))
	sink := testpeer.QmqpSink(b)
	var disk, sinkRates, qmqpRates, qmtpRates, rate1, p50s1, p99s1, rate20, p50s20, p99s20 []float64
	var sinkRatios, qmqpRatios, qmtpRatios, memQmqpRatios, memQmtpRatios, memQmqpRates, memQmtpRates []float64
	stored := 0
	ceiling := func() float64 {
		c := diskCeiling(b, b.TempDir(), n, size, true)
		syscall.Sync() // its writeback is not charged to the next figure
		disk = append(disk, c)
		return c
	}
	// paired measures one figure between two ceilings and returns the
	// ceiling after it (the next figure's ceiling before).
	paired := func(before float64, rates, ratios *[]float64, measure func() float64) float64 {
		rate := measure()
		after := ceiling()
		*rates = append(*rates, rate)
		*ratios = append(*ratios, rate/((before+after)/2))
		return after
	}
	for b.Loop() {
		for r := range rounds {
			src := fillFlushMaildir(b, n, size)
			qmqp := func() float64 { return qmqpSourceN(b, s.qmqp, n, size) }
			qmtp := func() float64 { return flushMaildirRate(b, bin, src, s.qmtp, n) }
			c := ceiling()
			if r%2 == 0 {
				c = paired(c, &qmqpRates, &qmqpRatios, qmqp)
				c = paired(c, &qmtpRates, &qmtpRatios, qmtp)
			} else {
				c = paired(c, &qmtpRates, &qmtpRatios, qmtp)
				c = paired(c, &qmqpRates, &qmqpRatios, qmqp)
			}
			c = paired(c, &sinkRates, &sinkRatios, func() float64 { return qmqpSourceN(b, sink, n, size) })
			c = paired(c, &memQmqpRates, &memQmqpRatios, func() float64 { return qmqpSourceN(b, mem.qmqp, n, size) })
			memSrc := fillFlushMaildir(b, n, size)
			paired(c, &memQmtpRates, &memQmtpRatios, func() float64 { return flushMaildirRate(b, bin, memSrc, mem.qmtp, n) })
			rt, p50, p99 := qmqpLatency(b, s.qmqp, 1, n/10, size)
			rate1, p50s1, p99s1 = append(rate1, rt), append(p50s1, p50), append(p99s1, p99)
			rt, p50, p99 = qmqpLatency(b, s.qmqp, 20, n, size)
			rate20, p50s20, p99s20 = append(rate20, rt), append(p50s20, p50), append(p99s20, p99)
			stored += 3*n + n/10
		}
	}
	if got := counting.Files(b, filepath.Join(dir, "new")); got != stored {
		b.Fatalf("%d files stored, want %d", got, stored)
	}
	d := median(disk)
	b.ReportMetric(d, "disk-fsync-files/s")
	b.ReportMetric(median(qmqpRates), "qmqp-msgs/s")
	b.ReportMetric(median(qmqpRatios), "qmqp/disk")
	b.ReportMetric(median(sinkRates), "qmqp-sink-msgs/s")
	b.ReportMetric(median(sinkRatios), "qmqp-sink/disk")
	b.ReportMetric(median(qmqpRates)/median(sinkRates), "qmqp/qmqp-sink")
	b.ReportMetric(median(qmtpRates), "qmtp-msgs/s")
	b.ReportMetric(median(qmtpRatios), "qmtp/disk")
	b.ReportMetric(median(memQmqpRates), "memory-qmqp-msgs/s")
	b.ReportMetric(median(memQmqpRatios), "memory-qmqp/disk")
	b.ReportMetric(median(memQmtpRates), "memory-qmtp-msgs/s")
	b.ReportMetric(median(memQmtpRatios), "memory-qmtp/disk")
	b.ReportMetric(median(rate1), "1-client-msgs/s")
	b.ReportMetric(median(p50s1), "1-client-p50-ms")
	b.ReportMetric(median(p99s1), "1-client-p99-ms")
	b.ReportMetric(median(rate20), "20-clients-msgs/s")
	b.ReportMetric(median(rate20)/d, "20-clients/disk")
	b.ReportMetric(median(p50s20), "20-clients-p50-ms")
	b.ReportMetric(median(p99s20), "20-clients-p99-ms")
}

// memoryDir is a directory on tmpfs (/dev/shm), removed at the end.
func memoryDir(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "qbox-bench-mem-")
	if err != nil {
		b.Fatalf("a maildir in memory: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
