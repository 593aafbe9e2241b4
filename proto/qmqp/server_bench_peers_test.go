//go:build peers

package qmqp_test

import (
	"context"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testkit/testpeer"
)

// serverCountingBackend accepts and forgets: the benchmark measures the
// protocol server, not a store.
type serverCountingBackend struct{ n atomic.Int64 }

type serverCountingDelivery struct{ b *serverCountingBackend }

func (b *serverCountingBackend) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return serverCountingDelivery{b}, nil
}
func (d serverCountingDelivery) Write(p []byte) (int, error) { return len(p), nil }
func (d serverCountingDelivery) Abort()                      {}
func (d serverCountingDelivery) Commit(_ context.Context, env proto.Envelope) []proto.Reply {
	d.b.n.Add(1)
	out := make([]proto.Reply, len(env.Recipients))
	for i := range out {
		out[i] = proto.K("ok")
	}
	return out
}

// BenchmarkServerVersusQmqpSink drives Postfix's qmqp-source (20 sessions,
// 5000 messages of 2000 bytes) into the qmqp.Server with a backend that
// stores nothing, and into Postfix's qmqp-sink, which does the same, in the
// same run: messages per second for both and the ratio.
func BenchmarkServerVersusQmqpSink(b *testing.B) {
	source := testpeer.Require(b, "qmqp-source", "postfix")
	const messages = 5000
	run := func(addr string) float64 {
		start := time.Now()
		out, err := exec.Command(source, "-s", "20", "-m", strconv.Itoa(messages), "-l", "2000", "-M", "example.test", "inet:"+addr).CombinedOutput()
		if err != nil {
			b.Fatalf("qmqp-source: %v\n%s", err, out)
		}
		return messages / time.Since(start).Seconds()
	}
	backend := &serverCountingBackend{}
	qboxAddr := serverStartB(b, &qmqp.Server{Backend: backend})
	sinkAddr := testpeer.QmqpSink(b)
	var ours, sink float64
	for i := 0; i < b.N; i++ {
		ours += run(qboxAddr)
		sink += run(sinkAddr)
	}
	if got := backend.n.Load(); got != int64(b.N*messages) {
		b.Fatalf("%d messages committed, want %d", got, b.N*messages)
	}
	b.ReportMetric(ours/float64(b.N), "qbox-msgs/s")
	b.ReportMetric(sink/float64(b.N), "qmqp-sink-msgs/s")
	b.ReportMetric(ours/sink, "ratio")
}

// serverStartB is serverStart for benchmarks: outcomes are dropped.
func serverStartB(b *testing.B, srv *qmqp.Server) string {
	return serverListen(b, srv, nil)
}
