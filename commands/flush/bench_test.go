package flush

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"qbox/proto/qmtp"
	"qbox/proto/testkit/linksim"
	"qbox/proto/testkit/testpeer"
)

// queue2K fills a maildir with n messages of 2 KB.
func queue2K(b *testing.B, n int) string {
	src := newMaildir(b)
	body := []byte("Subject: bench\n\n" + string(bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n"), 32)))
	body = body[:2048]
	body[len(body)-1] = '\n'
	for i := 0; i < n; i++ {
		enqueue(b, src, fmt.Sprintf("1700000000.b%05d.host", i), "sender@example.test", fmt.Sprintf("ppp-r%05d@remote.test", i), body, time.Minute)
	}
	return src
}

// BenchmarkFlushSlowLink flushes 200 messages of 2 KB through a 28.8
// kbit/s link (3600 bytes/s each way) with 100 ms one-way delay into qbox
// serve, and compares the time with the link's floor: the bytes sent
// divided by the rate, plus three round trips. Pipelining should keep the
// link full: the target ratio is at most 1.05. It takes about two
// minutes; run it with -benchtime=1x.
func BenchmarkFlushSlowLink(b *testing.B) {
	const rate = 3600
	const oneWay = 100 * time.Millisecond
	addr, _ := serve(b)
	proxy, err := linksim.Start(addr, linksim.Link{Rate: rate, Latency: oneWay})
	if err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		src := queue2K(b, 200)
		up0, down0 := proxy.BytesUp(), proxy.BytesDown()
		b.StartTimer()
		start := time.Now()
		sum, err := Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Connect: hostConnect(proxy.Addr, &qmtp.Client{})})
		elapsed := time.Since(start)
		if err != nil || sum.Succeeded != 200 {
			b.Fatalf("%v %+v", err, sum)
		}
		up, down := proxy.BytesUp()-up0, proxy.BytesDown()-down0
		floor := time.Duration(float64(up)/rate*float64(time.Second)) + 3*2*oneWay
		b.ReportMetric(elapsed.Seconds(), "s/flush")
		b.ReportMetric(float64(up), "bytes-up")
		b.ReportMetric(float64(down), "bytes-down")
		b.ReportMetric(floor.Seconds(), "s-floor")
		b.ReportMetric(elapsed.Seconds()/floor.Seconds(), "x-floor")
	}
}

// BenchmarkFlushLoopback10k flushes 10,000 messages of 2 KB over loopback
// into qbox serve (maildir store, fsync'd) with the qbox binary, and
// reports messages per second and the client's peak RSS.
func BenchmarkFlushLoopback10k(b *testing.B) {
	addr, _ := serve(b)
	flush10k(b, addr)
}

func flush10k(b *testing.B, addr string) {
	const n = 10000
	bin := testpeer.Binary(b)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		src := queue2K(b, n)
		b.StartTimer()
		start := time.Now()
		cmd := exec.Command(bin, "flush-maildir", src, "ppp-", addr)
		out, err := cmd.CombinedOutput()
		elapsed := time.Since(start)
		if err != nil {
			b.Fatalf("%v\n%s", err, out[max(0, len(out)-2000):])
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(ru.Maxrss)/1024, "MB-peak-RSS")
	}
}
