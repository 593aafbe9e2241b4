//go:build peers

package inject

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

// writeMessage writes a message of about size bytes (a header, then
// 77-byte lines) to a file in dir.
func writeMessage(b *testing.B, dir string, size int64) string {
	b.Helper()
	p := filepath.Join(dir, "msg")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString("Subject: big\nTo: r@example.test\n\n")
	line := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&*+-/=?^_`{|}"), 1)
	line = append(line[:76], '\n')
	for n := int64(0); n < size; n += int64(len(line)) {
		w.Write(line)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return p
}

// measure runs argv with stdin from the file at path (through a pipe when
// viaPipe) and returns the child's peak RSS in MiB and the wall time.
func measure(b *testing.B, path string, viaPipe bool, env []string, argv ...string) (float64, time.Duration) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	if viaPipe {
		cmd.Stdin = struct{ io.Reader }{f} // not an *os.File: exec copies it through a pipe
	} else {
		cmd.Stdin = f
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%v: %v\n%s", argv, err, stderr.String())
	}
	el := time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return float64(ru.Maxrss) / 1024, el // Maxrss is in KiB on Linux
}

// BenchmarkInject1GiB injects a 1 GiB message into Postfix's qmqp-sink and
// reports the qbox process's peak RSS (target: <= 32 MiB): from a file in
// the default mode (header completed, body counted then streamed), from a
// file with --raw, and from a pipe (spilled to a temporary file).
func BenchmarkInject1GiB(b *testing.B) {
	const size = 1 << 30
	sink := testpeer.QmqpSink(b)
	bin := testpeer.Binary(b)
	dir := b.TempDir()
	path := writeMessage(b, dir, size)
	env := append(os.Environ(), "TMPDIR="+dir)
	b.ResetTimer()
	for _, mode := range []struct {
		name    string
		pipe    bool
		rawFlag bool
	}{{"file", false, false}, {"file-raw", false, true}, {"pipe", true, false}} {
		b.Run(mode.name, func(b *testing.B) {
			argv := []string{bin, "inject", "-s", sink, "-f", "s@example.test"}
			if mode.rawFlag {
				argv = append(argv, "--raw")
			}
			argv = append(argv, "r@example.test")
			b.SetBytes(size)
			var peak float64
			for i := 0; i < b.N; i++ {
				rss, _ := measure(b, path, mode.pipe, env, argv...)
				peak = max(peak, rss)
			}
			b.ReportMetric(peak, "peak-RSS-MiB")
		})
	}
}

// BenchmarkInjectVsQmqpSource sends the same 64 MiB message with qbox
// inject --raw and with Postfix's qmqp-source (which builds the message in
// memory) into qmqp-sink, and reports both peak RSS figures and the
// throughput ratio measured in the same run.
func BenchmarkInjectVsQmqpSource(b *testing.B) {
	const size = 64 << 20
	sink := testpeer.QmqpSink(b)
	bin := testpeer.Binary(b)
	source := testpeer.Require(b, "qmqp-source", "postfix")
	dir := b.TempDir()
	path := writeMessage(b, dir, size)
	b.ResetTimer()
	var qboxTime, peerTime time.Duration
	var qboxRSS, peerRSS float64
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		rss, el := measure(b, path, false, os.Environ(), bin, "inject", "--raw", "-s", sink, "-f", "s@example.test", "r@example.test")
		qboxTime += el
		qboxRSS = max(qboxRSS, rss)
		rss, el = measure(b, path, false, os.Environ(), source, "-l", strconv.Itoa(size), "-m", "1", "-s", "1", "-f", "s@example.test", "-t", "r@example.test", sink)
		peerTime += el
		peerRSS = max(peerRSS, rss)
	}
	b.ReportMetric(qboxRSS, "qbox-peak-RSS-MiB")
	b.ReportMetric(peerRSS, "qmqp-source-peak-RSS-MiB")
	b.ReportMetric(float64(peerTime)/float64(qboxTime), "speed-vs-qmqp-source")
}
