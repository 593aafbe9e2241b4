//go:build peers

package benchmarks

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

// invocations is how many times each program runs in
// BenchmarkInjectOneMessage: the median of 30 is not moved by the odd
// run that the shared machine slows down.
const invocations = 30

// BenchmarkInjectOneMessage is the cost of sending one 2 KB message with
// one process, process start to exit: `qbox inject` and `qmail-qmqpc`
// (the qmail-queue interface: message on fd 0, envelope on fd 1) beside
// Postfix's `qmqp-source -m 1 -s 1 -l 2048` and beside the floor for a Go
// program, testdata/qmqpfloor (qmail-qmqpc's job with the standard
// library and nothing else, built as `make build` builds qbox), all into
// the same qmqp-sink. The four alternate, 30 runs each, so all see the
// same machine; the figures are medians. x/qmqp-source below 1 means qbox
// is the quicker; qmail-qmqpc/floor is what qbox's size (every command's
// packages initialised at each start) costs over the language's own
// start (target: at most 1.15). Beside them the library floor: the same
// floor with the design card's libraries (urfave/cli, go-maildir,
// go-isatty, go-smtp, miekg/dns) and crypto/tls, log/slog, log/syslog
// linked for their initialisation alone, what any one binary built on
// them pays at each start.
func BenchmarkInjectOneMessage(b *testing.B) {
	const size = 2048
	sink := testpeer.QmqpSink(b)
	bin := testpeer.Binary(b)
	qmqpc := testpeer.Personality(b, "qmail-qmqpc")
	floor := floorBinary(b, "floor")
	libFloor := floorBinary(b, "libfloor")
	source := testpeer.Require(b, "qmqp-source", "postfix")
	dir := b.TempDir()
	msg := writeFile(b, dir, "msg", append([]byte("Subject: one message\nTo: r@example.test\n\n"), body2K(size)...))
	envelope := writeFile(b, dir, "envelope", []byte("Fs@example.test\x00Tr@example.test\x00\x00"))
	injectArgv := []string{bin, "inject", "-s", sink, "-f", "s@example.test", "r@example.test"}
	peerArgv := []string{source, "-m", "1", "-s", "1", "-l", strconv.Itoa(size), "-f", "s@example.test", "-t", "r@example.test", sink}
	runQmqpc := func(qmqpc string) result {
		cmd := exec.Command(qmqpc)
		cmd.Env = append(os.Environ(), "QMQPSERVERS="+sink)
		m, err := os.Open(msg)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		e, err := os.Open(envelope) // fd 1, read: the qmail-queue interface
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		cmd.Stdin, cmd.Stdout = m, e
		return runCmd(b, cmd)
	}
	// One untimed run of each loads the programs into the page cache.
	run(b, msg, injectArgv...)
	runQmqpc(qmqpc)
	runQmqpc(floor)
	runQmqpc(libFloor)
	run(b, "", peerArgv...)
	b.ResetTimer()
	var inject, qmail, peer, floors, libFloors []time.Duration
	var injectRSS, qmqpcRSS, peerRSS, floorRSS float64
	for i := 0; i < b.N; i++ {
		for j := 0; j < invocations; j++ {
			r := run(b, msg, injectArgv...)
			inject = append(inject, r.elapsed)
			injectRSS = max(injectRSS, r.peakRSS)
			r = runQmqpc(qmqpc)
			qmail = append(qmail, r.elapsed)
			qmqpcRSS = max(qmqpcRSS, r.peakRSS)
			r = runQmqpc(floor)
			floors = append(floors, r.elapsed)
			floorRSS = max(floorRSS, r.peakRSS)
			r = runQmqpc(libFloor)
			libFloors = append(libFloors, r.elapsed)
			r = run(b, "", peerArgv...)
			peer = append(peer, r.elapsed)
			peerRSS = max(peerRSS, r.peakRSS)
		}
	}
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 }
	mi, mq, mp, mf := medianDuration(inject), medianDuration(qmail), medianDuration(peer), medianDuration(floors)
	ml := medianDuration(libFloors)
	b.ReportMetric(ms(ml), "library-floor-ms")
	b.ReportMetric(ms(ml)/ms(mf), "library-floor/floor")
	b.ReportMetric(ms(mq)/ms(ml), "qmail-qmqpc/library-floor")
	b.ReportMetric(ms(mi), "inject-ms")
	b.ReportMetric(ms(mq), "qmail-qmqpc-ms")
	b.ReportMetric(ms(mp), "qmqp-source-ms")
	b.ReportMetric(ms(mf), "floor-ms")
	b.ReportMetric(ms(mi)/ms(mp), "inject/qmqp-source")
	b.ReportMetric(ms(mq)/ms(mp), "qmail-qmqpc/qmqp-source")
	b.ReportMetric(ms(mq)/ms(mf), "qmail-qmqpc/floor")
	b.ReportMetric(ms(mf)/ms(mp), "floor/qmqp-source")
	b.ReportMetric(injectRSS, "inject-peak-RSS-MiB")
	b.ReportMetric(qmqpcRSS, "qmail-qmqpc-peak-RSS-MiB")
	b.ReportMetric(floorRSS, "floor-peak-RSS-MiB")
	b.ReportMetric(peerRSS, "qmqp-source-peak-RSS-MiB")
}

// floorBinary builds testdata/qmqpfloor as `make build` builds qbox
// (static, CGO_ENABLED=0): variant "floor" alone, "libfloor" with the
// design card's libraries linked for their initialisation (the tag
// libfloor).
func floorBinary(b *testing.B, variant string) string {
	b.Helper()
	out := filepath.Join(b.TempDir(), variant)
	cmd := exec.Command("go", "build", "-tags", variant+",urfave_cli_no_docs", "-o", out, "./testdata/qmqpfloor")
	cmd.Dir = testpeer.Root()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./testdata/qmqpfloor: %v\n%s", err, msg)
	}
	return out
}

func medianDuration(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
