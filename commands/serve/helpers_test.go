package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testkit/testpeer"
)

// lockedBuffer collects a process's stderr for assertions on its log,
// and tells waiters when it grows.
type lockedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every Write
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// snapshot returns the log and a channel closed by the next Write.
func (l *lockedBuffer) snapshot() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.b.String(), l.changed
}

// server is a running `qbox serve` process.
type server struct {
	cmd    *exec.Cmd
	qmqp   string // QMQP address
	qmtp   string // QMTP address
	smtp   string // SMTP address, with --smtp
	dir    string // the maildir, if any
	log    *lockedBuffer
	exited chan struct{}
	err    error // Wait's result, once exited is closed
}

// startServe runs qbox serve with QMQP and QMTP on 127.0.0.1:0 and extra
// args (which must choose the store), and waits until both listen; their
// ports come from serve's listening lines.
func startServe(t testing.TB, args ...string) *server {
	t.Helper()
	return startServeUnder(t, "", args...)
}

// startServeUnder is startServe with a shell command line run first in
// the shell that then execs qbox serve (e.g. "ulimit -n 64"); empty means
// no shell.
func startServeUnder(t testing.TB, shell string, args ...string) *server {
	t.Helper()
	s := &server{
		log:    &lockedBuffer{},
		exited: make(chan struct{}),
	}
	argv := append([]string{"serve", "--qmqp", "127.0.0.1:0", "--qmtp", "127.0.0.1:0"}, args...)
	smtp := false
	for i, a := range args {
		if a == "--maildir" && i+1 < len(args) {
			s.dir = args[i+1]
		}
		smtp = smtp || a == "--smtp"
	}
	s.cmd = exec.Command(testpeer.Binary(t), argv...)
	if shell != "" {
		s.cmd = exec.Command("/bin/sh", append([]string{"-c", shell + `; exec "$0" "$@"`, testpeer.Binary(t)}, argv...)...)
	}
	s.cmd.Stderr = s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
		if t.Failed() {
			t.Logf("qbox serve log:\n%s", tail(s.log.String(), 4000))
		}
	})
	s.qmqp = listeningAddr(t, s, "qmqp")
	s.qmtp = listeningAddr(t, s, "qmtp")
	if smtp {
		s.smtp = listeningAddr(t, s, "smtp")
	}
	return s
}

// listeningAddr waits for serve's listening line for protocol and
// returns the address in it.
func listeningAddr(t testing.TB, s *server, protocol string) string {
	t.Helper()
	re := regexp.MustCompile(`msg=listening proto=` + protocol + ` addr=(\S+)`)
	if !waitLogFor(t, s, 15*time.Second, func(log string) bool { return re.MatchString(log) }) {
		t.Fatalf("qbox serve does not say it listens for %s:\n%s", protocol, tail(s.log.String(), 4000))
	}
	return re.FindStringSubmatch(s.log.String())[1]
}

// waitLog waits (bounded) until serve's log contains every one of subs:
// a log line may be written just after the reply the test already read.
func waitLog(t testing.TB, s *server, subs ...string) bool {
	t.Helper()
	return waitLogFor(t, s, 10*time.Second, func(log string) bool {
		for _, sub := range subs {
			if !strings.Contains(log, sub) {
				return false
			}
		}
		return true
	})
}

// waitLogFor waits until ok holds for serve's log, each time the log
// grows, for at most limit or until serve exits.
func waitLogFor(t testing.TB, s *server, limit time.Duration, ok func(log string) bool) bool {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		log, changed := s.log.snapshot()
		if ok(log) {
			return true
		}
		select {
		case <-changed:
		case <-s.exited:
			return ok(s.log.String()) // nothing more will come
		case <-deadline.C:
			return false
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// sendQMQP sends one message with the real QMQP client and returns the
// server's reply, K, Z or D, with a nil error; the error is for no reply
// at all (the client returns a Z or D as a *proto.Error as well).
func sendQMQP(t testing.TB, addr string, env proto.Envelope, msg []byte) (proto.Reply, error) {
	t.Helper()
	c := &qmqp.Client{Servers: []string{addr}, Timeout: 30 * time.Second}
	r, err := c.Send(context.Background(), env, bytes.NewReader(msg), int64(len(msg)))
	if refusal := (*proto.Error)(nil); errors.As(err, &refusal) {
		err = nil
	}
	return r, err
}

func mustK(t testing.TB, addr string, env proto.Envelope, msg []byte) proto.Reply {
	t.Helper()
	r, err := sendQMQP(t, addr, env, msg)
	if err != nil {
		t.Fatalf("sending to %s: %v", addr, err)
	}
	if r.Status != proto.OK {
		t.Fatalf("reply %q, want K", r.String())
	}
	return r
}

// stored is one file of the maildir split into its parts.
type stored struct {
	name        string
	sender      string
	recipient   string
	received    string
	message     []byte
	wholeLength int
}

// readMaildir reads and parses every file in dir/new, failing on any file
// that is not in the store's layout.
func readMaildir(t testing.TB, dir string) []stored {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]stored, 0, len(entries))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, parseStored(t, e.Name(), b))
	}
	return out
}

func parseStored(t testing.TB, name string, b []byte) stored {
	t.Helper()
	lines := bytes.SplitN(b, []byte("\n"), 4)
	if len(lines) != 4 {
		t.Fatalf("%s: not three header lines and a message: %q", name, tail(string(b), 200))
	}
	rp, ok1 := strings.CutPrefix(string(lines[0]), "Return-Path: <")
	rp, ok2 := strings.CutSuffix(rp, ">")
	dt, ok3 := strings.CutPrefix(string(lines[1]), "Delivered-To: ")
	if !ok1 || !ok2 || !ok3 || !strings.HasPrefix(string(lines[2]), "Received: from ") {
		t.Fatalf("%s: bad header lines %q", name, bytes.Join(lines[:3], []byte("|")))
	}
	return stored{name: name, sender: rp, recipient: dt, received: string(lines[2]), message: lines[3], wholeLength: len(b)}
}

// qmtpPackage encodes one QMTP package. crlf selects encoding #1 (CR LF
// line ends, converted back to LF by the server).
func qmtpPackage(msg []byte, crlf bool, sender string, rcpts ...string) []byte {
	body := []byte{'\n'}
	if crlf {
		body = []byte{'\r'}
		msg = bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
	}
	body = append(body, msg...)
	var list []byte
	for _, r := range rcpts {
		list = netstring.AppendString(list, r)
	}
	out := netstring.Append(nil, body)
	out = netstring.AppendString(out, sender)
	return netstring.Append(out, list)
}

// readReplies reads n reply netstrings (or fewer, if the connection ends).
func readReplies(c net.Conn, n int, within time.Duration) ([]proto.Reply, error) {
	c.SetReadDeadline(time.Now().Add(within))
	nr := netstring.NewReader(bufio.NewReader(c))
	var out []proto.Reply
	for range n {
		b, err := nr.ReadBytes(proto.MaxReplyText)
		if err != nil {
			return out, err
		}
		r, err := proto.ParseReply(b)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func fmtReplies(rs []proto.Reply) string {
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprintf("%q", r.String()))
	}
	return strings.Join(s, " ")
}
