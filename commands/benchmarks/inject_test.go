package benchmarks

import (
	"strconv"
	"testing"
	"time"

	"qbox/proto/testpeer"
)

// invocations is how many times each program runs in
// BenchmarkInjectOneMessage: enough to average out process start-up noise.
const invocations = 50

// BenchmarkInjectOneMessage is the cost of one `qbox inject` of a 2 KB
// message, process start to exit, beside Postfix's `qmqp-source -m 1 -s 1
// -l 2048` sending one message of the same payload into the same
// qmqp-sink. The two alternate, 50 runs each, so both see the same
// machine; qbox/qmqp-source below 1 means qbox is the quicker.
func BenchmarkInjectOneMessage(b *testing.B) {
	const size = 2048
	sink := testpeer.QmqpSink(b)
	bin := testpeer.Binary(b)
	source := testpeer.Require(b, "qmqp-source", "postfix")
	msg := writeFile(b, b.TempDir(), "msg", append([]byte("Subject: one message\nTo: r@example.test\n\n"), body2K(size)...))
	qboxArgv := []string{bin, "inject", "-s", sink, "-f", "s@example.test", "r@example.test"}
	peerArgv := []string{source, "-m", "1", "-s", "1", "-l", strconv.Itoa(size), "-f", "s@example.test", "-t", "r@example.test", sink}
	// One untimed run of each loads both programs into the page cache.
	run(b, msg, qboxArgv...)
	run(b, "", peerArgv...)
	b.ResetTimer()
	var qbox, peer time.Duration
	var qboxRSS, peerRSS float64
	for i := 0; i < b.N; i++ {
		for j := 0; j < invocations; j++ {
			r := run(b, msg, qboxArgv...)
			qbox += r.elapsed
			qboxRSS = max(qboxRSS, r.peakRSS)
			r = run(b, "", peerArgv...)
			peer += r.elapsed
			peerRSS = max(peerRSS, r.peakRSS)
		}
	}
	n := float64(b.N * invocations)
	b.ReportMetric(qbox.Seconds()*1000/n, "qbox-ms")
	b.ReportMetric(peer.Seconds()*1000/n, "qmqp-source-ms")
	b.ReportMetric(qbox.Seconds()/peer.Seconds(), "qbox/qmqp-source")
	b.ReportMetric(qboxRSS, "qbox-peak-RSS-MiB")
	b.ReportMetric(peerRSS, "qmqp-source-peak-RSS-MiB")
}
