package benchmarks

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"qbox/proto/store/maildir"
	"qbox/proto/testkit/linksim"
	"qbox/proto/testkit/testpeer"
)

// The modem of QMQP's headline claim: 28.8 kbit/s each way (3600 bytes
// per second) with 100 ms one-way delay.
const (
	modemRate    = 3600
	modemLatency = 100 * time.Millisecond
)

// modem starts a linksim proxy to target with the modem's rate and delay.
func modem(b *testing.B, target string) *linksim.Proxy {
	b.Helper()
	p, err := linksim.Start(target, linksim.Link{Rate: modemRate, Latency: modemLatency})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// wire returns how long n bytes take on the modem line.
func wire(n int64) time.Duration {
	return time.Duration(n * int64(time.Second) / modemRate)
}

// body2K returns a message body of exactly size bytes: 64-byte lines.
func body2K(size int) []byte {
	line := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n")
	var out []byte
	for len(out) < size {
		out = append(out, line...)
	}
	out = out[:size]
	out[size-1] = '\n'
	return out
}

// result is one finished child process.
type result struct {
	elapsed time.Duration
	peakRSS float64 // MiB
	stdout  []byte
}

// run runs argv with stdin from the file at stdinPath ("" for none) and
// fails the benchmark when it does not exit 0.
func run(b *testing.B, stdinPath string, argv ...string) result {
	b.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	if stdinPath != "" {
		f, err := os.Open(stdinPath)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	return runCmd(b, cmd)
}

// runCmd runs cmd, its stdout captured unless already set, and fails the
// benchmark when it does not exit 0.
func runCmd(b *testing.B, cmd *exec.Cmd) result {
	b.Helper()
	var stdout, stderr bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &stdout
	}
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		b.Fatalf("%s: %v\n%s%s", cmd.Path, err, tail(stdout.Bytes()), tail(stderr.Bytes()))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return result{elapsed: elapsed, peakRSS: float64(ru.Maxrss) / 1024, stdout: stdout.Bytes()}
}

func tail(b []byte) []byte {
	return b[max(0, len(b)-2000):]
}

// serveQMTP starts `qbox serve` storing QMTP mail in a fresh maildir and
// returns its address and the maildir.
func serveQMTP(b *testing.B, extra ...string) (string, string) {
	b.Helper()
	dest := filepath.Join(b.TempDir(), "dest")
	s := testpeer.StartServe(b, append([]string{"--qmtp", "127.0.0.1:0", "--qmqp", "", "--maildir", dest}, extra...)...)
	return s.QMTP, dest
}

// newMaildir makes an empty maildir for flush-maildir to send from.
func newMaildir(b *testing.B) string {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "Maildir")
	if err := maildir.Init(dir); err != nil {
		b.Fatal(err)
	}
	return dir
}

// enqueue writes a message file as qmail-local delivers to a maildir
// alias: Return-Path, then Delivered-To with the prefix, then the message.
func enqueue(b *testing.B, dir, name, sender, deliveredTo string, msg io.Reader) {
	b.Helper()
	f, err := os.Create(filepath.Join(dir, "new", name))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, "Return-Path: <"+sender+">\nDelivered-To: "+deliveredTo+"\n"); err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, msg); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
