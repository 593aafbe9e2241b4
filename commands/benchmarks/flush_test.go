package benchmarks

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
)

// BenchmarkFlushGroupModem flushes mail sent to several recipients — 10
// messages of 2 KB, each to 5 recipients, so 50 files in the maildir, as
// qmail-local leaves them — through the 28.8 kbit/s line (3600 bytes/s,
// 100 ms one-way) into `qbox serve`, once as serialmail's maildirqmtp
// does (one QMTP package per file: flush-s) and once with --group (one
// package per message with its 5 recipients: group-s). Each is beside the
// limit of its own exchange: the busier direction's bytes divided by the
// rate plus one round trip (the line is full duplex and QMTP is
// pipelined, so replies travel while messages are still being sent).
// x/limit is the target figure (at most 1.05); flush/group is what
// --group saves.
func BenchmarkFlushGroupModem(b *testing.B) {
	const messages, perMessage, size = 10, 5, 2048
	bin := testpeer.Binary(b)
	addr, dest := serveQMTP(b)
	line := modem(b, addr)
	fill := func() string {
		src := newMaildir(b)
		for m := 0; m < messages; m++ {
			msg := append([]byte(fmt.Sprintf("Subject: news %d\n\n", m)), body2K(size)...)
			for r := 0; r < perMessage; r++ {
				name := fmt.Sprintf("%d.m%02dr%d.host", 1700000000+m*perMessage+r, m, r)
				enqueue(b, src, name, "s@example.test", fmt.Sprintf("ppp-u%d.%d@remote.test", m, r), bytes.NewReader(msg))
			}
		}
		return src
	}
	flush := func(group bool) (elapsed, limit time.Duration) {
		src := fill()
		stored := counting.Files(b, filepath.Join(dest, "new"))
		argv := []string{bin, "flush-maildir"}
		if group {
			argv = append(argv, "--group")
		}
		argv = append(argv, src, "ppp-", line.Addr)
		up0, down0 := line.BytesUp(), line.BytesDown()
		r := run(b, "", argv...)
		up, down := line.BytesUp()-up0, line.BytesDown()-down0
		if left := counting.Files(b, filepath.Join(src, "new")); left != 0 {
			b.Fatalf("%v: %d files left in the maildir\n%s", argv, left, tail(r.stdout))
		}
		if got := counting.Files(b, filepath.Join(dest, "new")) - stored; got != messages*perMessage {
			b.Fatalf("%v: serve stored %d files, want %d", argv, got, messages*perMessage)
		}
		return r.elapsed, wire(max(up, down)) + 2*modemLatency
	}
	b.ResetTimer()
	var plain, plainLimit, grouped, groupLimit time.Duration
	for i := 0; i < b.N; i++ {
		el, lim := flush(false)
		plain, plainLimit = plain+el, plainLimit+lim
		el, lim = flush(true)
		grouped, groupLimit = grouped+el, groupLimit+lim
	}
	n := float64(b.N)
	b.ReportMetric(plain.Seconds()/n, "flush-s")
	b.ReportMetric(plainLimit.Seconds()/n, "flush-limit-s")
	b.ReportMetric(plain.Seconds()/plainLimit.Seconds(), "flush/limit")
	b.ReportMetric(grouped.Seconds()/n, "group-s")
	b.ReportMetric(groupLimit.Seconds()/n, "group-limit-s")
	b.ReportMetric(grouped.Seconds()/groupLimit.Seconds(), "group/limit")
	b.ReportMetric(plain.Seconds()/grouped.Seconds(), "flush/group")
}

// patternReader yields size bytes of 77-byte text lines.
type patternReader struct {
	left int64
	pos  int
}

var patternLine = []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&*+-/=?^_`{\n")

func (p *patternReader) Read(buf []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	buf = buf[:min(int64(len(buf)), p.left)]
	for i := range buf {
		buf[i] = patternLine[p.pos]
		p.pos = (p.pos + 1) % len(patternLine)
	}
	p.left -= int64(len(buf))
	return len(buf), nil
}

// BenchmarkFlushMaildir1GiBRSS flushes one 1 GiB message from a maildir
// into `qbox serve` over loopback and reports flush-maildir's peak RSS
// (target: 32 MiB; the file is streamed, never held) and its throughput.
// serialmail's maildirqmtp, the peer, is not packaged for Debian, so
// there is no peer figure beside this one.
func BenchmarkFlushMaildir1GiBRSS(b *testing.B) {
	const size = 1 << 30
	bin := testpeer.Binary(b)
	addr, dest := serveQMTP(b, "--max-size", "2G", "--timeout", "5m")
	var peak float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		src := newMaildir(b)
		enqueue(b, src, "1700000000.big.host", "s@example.test", "ppp-r@remote.test",
			io.MultiReader(bytes.NewReader([]byte("Subject: big\n\n")), &patternReader{left: size}))
		b.StartTimer()
		r := run(b, "", bin, "flush-maildir", "--read-timeout", "5m", "--write-timeout", "5m", src, "ppp-", addr)
		b.StopTimer()
		peak = max(peak, r.peakRSS)
		if left := counting.Files(b, filepath.Join(src, "new")); left != 0 {
			b.Fatalf("%d files left in the maildir\n%s", left, tail(r.stdout))
		}
		names, _ := filepath.Glob(filepath.Join(dest, "new", "*"))
		if len(names) != 1 {
			b.Fatalf("serve stored %d files, want 1", len(names))
		}
		if st, err := os.Stat(names[0]); err != nil || st.Size() < size {
			b.Fatalf("stored file %s: %v", names[0], err)
		}
		os.Remove(names[0])
		os.RemoveAll(src)
		b.StartTimer()
	}
	b.SetBytes(size)
	b.ReportMetric(peak, "peak-RSS-MiB")
	b.ReportMetric(32, "target-MiB")
}
