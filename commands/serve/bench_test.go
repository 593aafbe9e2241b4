package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
	protoserver "qbox/proto/server"
	"qbox/proto/testkit/counting"
)

// peakRSS returns a process's peak resident set size in MiB (VmHWM).
func peakRSS(b testing.TB, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// patternReader yields n bytes of mail-like lines without holding them.
type patternReader struct{ left int64 }

var patternLine = []byte(strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 2) + "\n")

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	lim := len(b)
	if int64(lim) > p.left {
		lim = int(p.left)
	}
	n := 0
	for n < lim {
		n += copy(b[n:lim], patternLine)
	}
	p.left -= int64(n)
	return n, nil
}

const gib = 1 << 30

// A 1 GiB message through QMQP and through QMTP: serve's peak RSS
// (target 64 MiB), the message streamed to disk and copied file to file.
func BenchmarkOneGiBMessageRSS(b *testing.B) {
	for _, p := range []string{"QMQP", "QMTP"} {
		b.Run(p, func(b *testing.B) {
			dir := b.TempDir()
			s := startServe(b, "--maildir", dir, "--max-size", "2G", "--timeout", "120s")
			env := proto.Envelope{Sender: "big@example.test", Recipients: []string{"r@example.test"}}
			for b.Loop() {
				var r proto.Reply
				var err error
				if p == "QMQP" {
					c := &qmqp.Client{Servers: []string{s.qmqp}, Timeout: 120 * time.Second}
					r, err = c.Send(context.Background(), env, &patternReader{left: gib}, gib)
				} else {
					r, err = sendQMTPStream(s.qmtp, env, &patternReader{left: gib}, gib)
				}
				if err != nil || r.Status != proto.OK {
					b.Fatalf("%s 1 GiB: %q %v", p, r.String(), err)
				}
			}
			b.StopTimer()
			b.ReportMetric(peakRSS(b, s.cmd.Process.Pid), "peak-RSS-MiB")
			b.ReportMetric(64, "target-MiB")
			files := readMaildirNames(b, dir)
			for _, f := range files {
				if st, err := os.Stat(f); err != nil || st.Size() < gib {
					b.Fatalf("stored file %s: %v", f, err)
				}
				os.Remove(f)
			}
		})
	}
}

func readMaildirNames(b *testing.B, dir string) []string {
	names, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	if len(names) == 0 {
		b.Fatal("nothing stored")
	}
	return names
}

// sendQMTPStream sends one QMTP package (LF encoding) streaming size bytes
// from msg and reads the recipient's reply.
func sendQMTPStream(addr string, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return proto.Reply{}, err
	}
	defer c.Close()
	bw := bufio.NewWriterSize(c, 256<<10)
	nw := netstring.NewWriter(bw)
	nw.WriteHeader(size + 1)
	bw.WriteByte('\n')
	if _, err := io.CopyN(bw, msg, size); err != nil {
		return proto.Reply{}, err
	}
	nw.WriteTrailer()
	nw.WriteString(env.Sender)
	var list []byte
	for _, r := range env.Recipients {
		list = netstring.AppendString(list, r)
	}
	nw.WriteBytes(list)
	if err := bw.Flush(); err != nil {
		return proto.Reply{}, err
	}
	rs, err := readReplies(c, 1, 120*time.Second)
	if err != nil {
		return proto.Reply{}, err
	}
	return rs[0], nil
}

// 200 sessions in flight at once, each mid-way through a 1 MiB message:
// serve's peak RSS (target 128 MiB).
func BenchmarkConcurrentSessionsRSS(b *testing.B) {
	const sessions, size = 200, 1 << 20
	dir := b.TempDir()
	s := startServe(b, "--maildir", dir, "--max-conns", "256")
	msg := make([]byte, size)
	(&patternReader{left: size}).Read(msg)
	var items []byte
	items = netstring.Append(items, msg)
	items = netstring.AppendString(items, "a@example.test")
	items = netstring.AppendString(items, "b@example.test")
	pkg := netstring.Append(nil, items)
	for b.Loop() {
		var connected, wg sync.WaitGroup
		release := make(chan struct{})
		errs := make(chan error, sessions)
		conns := make([]net.Conn, sessions)
		for i := range sessions {
			connected.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", s.qmqp)
				if err != nil {
					connected.Done()
					errs <- err
					return
				}
				defer c.Close()
				_, err = c.Write(pkg[:len(pkg)/2])
				if err == nil {
					conns[i] = c
				}
				connected.Done()
				if err != nil {
					errs <- err
					return
				}
				<-release // all sessions hold half a message now
				if _, err := c.Write(pkg[len(pkg)/2:]); err != nil {
					errs <- err
					return
				}
				rs, err := readReplies(c, 1, 60*time.Second)
				if err != nil || rs[0].Status != proto.OK {
					errs <- fmt.Errorf("reply %s %v", fmtReplies(rs), err)
				}
			}()
		}
		connected.Wait()
		for _, c := range conns {
			if c != nil { // else its error is in errs
				waitServerRead(b, c) // the server reads what was sent
			}
		}
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(peakRSS(b, s.cmd.Process.Pid), "peak-RSS-MiB")
	b.ReportMetric(128, "target-MiB")
	if n := counting.Files(b, filepath.Join(dir, "new")); n != sessions*b.N {
		b.Fatalf("%d files stored, want %d", n, sessions*b.N)
	}
}

// largestEnvelope is the largest legal envelope at serve's defaults:
// 10,000 recipients (--max-recipients) of 1,000 bytes (the address
// limit), with a 1,000-byte sender.
func largestEnvelope() proto.Envelope {
	addr := func(i int) string {
		local := fmt.Sprintf("r%05d.", i)
		return local + strings.Repeat("x", 1000-len(local)-len("@example.test")) + "@example.test"
	}
	env := proto.Envelope{Sender: addr(99999)}
	for i := range 10000 {
		env.Recipients = append(env.Recipients, addr(i))
	}
	return env
}

// --max-conns (200) sessions at once, each sending the largest legal
// envelope at the defaults, all held just before their final byte so
// every envelope is in the server at the same time: serve's peak RSS,
// beside the target of 128 MiB. (Before --envelope-memory this took
// 2.5 GiB.) Envelopes that do not fit in --envelope-memory get Z
// (QMQP) or their recipients beyond it Z (QMTP); the figures say how
// many recipients got K.
func BenchmarkLargestEnvelopesRSS(b *testing.B) {
	const sessions = protoserver.DefaultMaxConns
	env := largestEnvelope()
	msg := []byte("Subject: the largest envelope\n\nbody\n")
	for _, p := range []string{"QMQP", "QMTP"} {
		b.Run(p, func(b *testing.B) {
			dir := b.TempDir()
			s := startServe(b, "--maildir", dir, "--timeout", "300s")
			var pkg []byte
			addr := s.qmqp
			if p == "QMQP" {
				var items []byte
				items = netstring.Append(items, msg)
				items = netstring.AppendString(items, env.Sender)
				for _, r := range env.Recipients {
					items = netstring.AppendString(items, r)
				}
				pkg = netstring.Append(nil, items)
			} else {
				pkg = qmtpPackage(msg, false, env.Sender, env.Recipients...)
				addr = s.qmtp
			}
			nReplies := 1
			if p == "QMTP" {
				nReplies = len(env.Recipients)
			}
			var accepted int64
			for b.Loop() {
				var sent, wg sync.WaitGroup
				var mu sync.Mutex
				release := make(chan struct{})
				errs := make(chan error, sessions)
				for range sessions {
					sent.Add(1)
					wg.Add(1)
					go func() {
						defer wg.Done()
						c, err := net.Dial("tcp", addr)
						if err != nil {
							sent.Done()
							errs <- err
							return
						}
						defer c.Close()
						c.SetWriteDeadline(time.Now().Add(300 * time.Second))
						_, err = c.Write(pkg[:len(pkg)-1])
						sent.Done()
						if err != nil {
							errs <- err
							return
						}
						<-release // every session's envelope is in the server now
						if _, err := c.Write(pkg[len(pkg)-1:]); err != nil {
							errs <- err
							return
						}
						rs, err := readReplies(c, nReplies, 300*time.Second)
						if err != nil {
							errs <- fmt.Errorf("replies: %v", err)
							return
						}
						k := 0
						for _, r := range rs {
							if r.Status == proto.OK {
								k++
							} else if r.Status == proto.Permanent {
								errs <- fmt.Errorf("D reply %q", r.String())
								return
							}
						}
						mu.Lock()
						accepted += int64(k * (len(env.Recipients) / nReplies))
						mu.Unlock()
					}()
				}
				sent.Wait()
				close(release)
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(peakRSS(b, s.cmd.Process.Pid), "peak-RSS-MiB")
			b.ReportMetric(128, "target-MiB")
			b.ReportMetric(float64(accepted)/float64(b.N), "rcpts-K")
			if n := counting.Files(b, filepath.Join(dir, "new")); int64(n) != accepted {
				b.Fatalf("%d files stored, %d recipients got K", n, accepted)
			}
		})
	}
}

// Issue 25, the other side of the waiting room: a good client while idle
// clients hold serve's sessions, with its defaults (--max-conns 200, a
// waiting room of 1,000, --timeout 60 s, so a wait of 10 s). 200 idle SMTP
// clients (each greeted, so each holds a slot), then a good QMQP client:
// it waits its 10 s for a slot and is refused, a temporary failure. Then
// 1,000 idle clients more fill the waiting room (one more is greeted 421 at
// once): a good QMQP client is refused at once, and a good SMTP client is
// greeted 421 4.3.2 at once. The figures are the good clients' times to
// their failure.
func BenchmarkGoodClientBesideIdleSlots(b *testing.B) {
	const max, waiting = protoserver.DefaultMaxConns, protoserver.DefaultWaitingFactor * protoserver.DefaultMaxConns
	env := proto.Envelope{Sender: "good@example.test", Recipients: []string{"r@example.test"}}
	msg := []byte("Subject: good\n\nclient\n")
	good := func(addr string) float64 {
		start := time.Now()
		c := &qmqp.Client{Servers: []string{addr}, Timeout: time.Minute}
		if r, err := c.Send(context.Background(), env, bytes.NewReader(msg), int64(len(msg))); err == nil {
			b.Fatalf("the good client got %q with every slot held", r.String())
		}
		return time.Since(start).Seconds()
	}
	for b.Loop() {
		s := startServe(b, "--maildir", b.TempDir(), "--smtp", "127.0.0.1:0")
		var idle []net.Conn
		dialSMTP := func() (net.Conn, string) {
			c, err := net.Dial("tcp", s.smtp)
			if err != nil {
				b.Fatal(err)
			}
			idle = append(idle, c)
			c.SetReadDeadline(time.Now().Add(time.Minute))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil && line == "" {
				b.Fatalf("connection %d: %v", len(idle), err)
			}
			return c, line
		}
		for range max {
			if _, line := dialSMTP(); !strings.HasPrefix(line, "220 ") {
				b.Fatalf("idle client %d greeted %q", len(idle), line)
			}
		}
		waited := good(s.qmqp)
		for range waiting {
			c, err := net.Dial("tcp", s.smtp)
			if err != nil {
				b.Fatal(err)
			}
			idle = append(idle, c)
		}
		start := time.Now()
		if _, line := dialSMTP(); !strings.HasPrefix(line, "421 4.3.2 ") {
			b.Fatalf("the client beyond slots and waiting room greeted %q", line)
		}
		smtpRefused := time.Since(start).Seconds()
		refusedAtOnce := good(s.qmqp)
		for _, c := range idle {
			c.Close()
		}
		b.ReportMetric(waited, "room-free-qmqp-fail-s")
		b.ReportMetric(refusedAtOnce*1000, "room-full-qmqp-fail-ms")
		b.ReportMetric(smtpRefused*1000, "room-full-smtp-421-ms")
	}
}
