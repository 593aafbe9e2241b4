//go:build peers && linux

package spool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"qbox/proto"
)

// wchar is the bytes this process has written so far (/proc/self/io).
func wchar(b *testing.B) int64 {
	b.Helper()
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Skip("no wchar in /proc/self/io")
	return 0
}

// BenchmarkPickupOneDrop2000Recipients: root's pickup of one 200 KB drop
// to 2,000 recipients (issue 22): its time, the bytes the pickup wrote
// (write(2) calls, /proc/self/io's wchar) and what the queue holds
// afterwards, beside the drop's size (target: at most 2 x). The layout
// that wrote one copy per recipient needed about 400 MB.
func BenchmarkPickupOneDrop2000Recipients(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the pickup runs as root")
	}
	var rcpts []string
	for i := range 2000 {
		rcpts = append(rcpts, fmt.Sprintf("recipient%04d@example.test", i))
	}
	msg := append([]byte("Subject: 200 KB to 2,000\n\n"), bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopq\n"), 200<<10/64)...)
	var secs, written, held, drop float64
	for b.Loop() {
		b.StopTimer()
		q := SystemQueue{Root: filepath.Join(b.TempDir(), "sys")}
		if err := q.Create(); err != nil {
			b.Fatal(err)
		}
		if _, err := Open(q.QueueDir()); err != nil {
			b.Fatal(err)
		}
		paths, err := Drop(q.DropDir(), proto.Envelope{Sender: "s@example.test", Recipients: rcpts}, bytes.NewReader(msg), int64(len(msg)), "hub down")
		if err != nil {
			b.Fatal(err)
		}
		drop = 0
		for _, p := range paths {
			st, _ := os.Stat(p)
			drop += float64(st.Size())
		}
		before := wchar(b)
		start := time.Now()
		b.StartTimer()
		res, err := PickUp(q, time.Now())
		b.StopTimer()
		secs = time.Since(start).Seconds()
		written = float64(wchar(b) - before)
		if err != nil || len(res.Picked) != len(paths) {
			b.Fatalf("pickup: %+v %v", res, err)
		}
		held = 0
		filepath.Walk(q.QueueDir(), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				held += float64(fi.Size())
			}
			return nil
		})
		if q, _, err := (&Spool{Dir: q.QueueDir()}).Queued(); err != nil || len(q) != len(rcpts) {
			b.Fatalf("%d recipients queued (%v), want %d", len(q), err, len(rcpts))
		}
		b.StartTimer()
	}
	b.ReportMetric(secs*1000, "pickup-ms")
	b.ReportMetric(drop, "drop-bytes")
	b.ReportMetric(written, "written-bytes")
	b.ReportMetric(held, "queue-bytes")
	b.ReportMetric(written/drop, "written/drop")
}
