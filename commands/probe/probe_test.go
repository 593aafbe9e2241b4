package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto/probe"
	"qbox/proto/testkit/testpeer"
)

// runProbe runs the command's core and returns its verdict, the decoded
// JSON results and the table.
func runProbe(t *testing.T, cfg Config) (probe.Verdict, []Result, string) {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Wait == 0 {
		cfg.Wait = 500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var table bytes.Buffer
	tcfg := cfg
	tcfg.JSON = false
	code, err := Run(ctx, tcfg, &table)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var js bytes.Buffer
	cfg.JSON = true
	jcode, err := Run(ctx, cfg, &js)
	if err != nil {
		t.Fatalf("Run --json: %v", err)
	}
	var results []Result
	if err := json.Unmarshal(js.Bytes(), &results); err != nil {
		t.Fatalf("JSON %q: %v", js.String(), err)
	}
	if jcode != code {
		t.Fatalf("verdict %v for the table, %v for --json", code, jcode)
	}
	return code, results, table.String()
}

func one(t *testing.T, cfg Config) (probe.Verdict, Result, string) {
	t.Helper()
	code, rs, table := runProbe(t, cfg)
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1: %+v", len(rs), rs)
	}
	return code, rs[0], table
}

func TestClosedPort(t *testing.T) {
	addr := testpeer.ClosedAddr(t)
	code, r, table := one(t, Config{Targets: []string{addr}, Protocol: probe.QMTP})
	if code != probe.Down || r.State != probe.Closed {
		t.Fatalf("verdict %v, %+v", code, r)
	}
	if !strings.Contains(table, "closed") || !strings.Contains(table, "down") {
		t.Fatalf("table:\n%s", table)
	}
}

// blackHole accepts connections and never reads or writes.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

func TestListenerThatNeverReads(t *testing.T) {
	addr := blackHole(t)
	// Harmlessly, it looks like any QMQP or QMTP server: open and silent.
	code, r, _ := one(t, Config{Targets: []string{addr}, Protocol: probe.QMQP})
	if code != probe.OK || r.Heard != probe.Silence {
		t.Fatalf("verdict %v, %+v", code, r)
	}
	// Submitting shows the difference: no reply.
	code, r, table := one(t, Config{Targets: []string{addr}, Protocol: probe.QMQP, SendTo: "nobody@example.test", Timeout: 300 * time.Millisecond})
	if code != probe.Unexpected || r.Send == nil || r.Send.Reply != nil || r.Send.Error == "" {
		t.Fatalf("--send: verdict %v, %+v %+v", code, r, r.Send)
	}
	if !strings.Contains(table, "no reply") {
		t.Fatalf("table:\n%s", table)
	}
}

// fullBacklog is a listener whose accept queue is full, so the kernel
// drops further SYNs: to a client, a filtered port.
func fullBacklog(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the accept queue never filled")
	return ""
}

func TestFilteredPort(t *testing.T) {
	addr := fullBacklog(t)
	code, r, _ := one(t, Config{Targets: []string{addr}, Protocol: probe.QMTP, Timeout: 300 * time.Millisecond})
	if code != probe.Down || r.State != probe.Filtered {
		t.Fatalf("verdict %v, %+v", code, r)
	}
}

// serve starts the qbox binary's QMQP and QMTP server on ports the
// kernel picks, with a maildir store, and returns both addresses (from its
// "listening" log lines) and the maildir.
func serve(t *testing.T) (qmqpAddr, qmtpAddr, maildir string) {
	t.Helper()
	maildir = filepath.Join(t.TempDir(), "Maildir")
	s := testpeer.StartServe(t, "--maildir", maildir, "--qmqp", "127.0.0.1:0", "--qmtp", "127.0.0.1:0")
	return s.QMQP, s.QMTP, maildir
}

func TestQboxServe(t *testing.T) {
	qmqpAddr, qmtpAddr, maildir := serve(t)
	code, rs, _ := runProbe(t, Config{Targets: []string{qmqpAddr + "", qmtpAddr}, Protocol: probe.Unknown, Wait: 500 * time.Millisecond})
	// Non-standard ports and no protocol flag: reported, judged by what
	// was heard only.
	if code != probe.OK || rs[0].Heard != probe.Silence || rs[1].Heard != probe.Silence {
		t.Fatalf("verdict %v, %+v", code, rs)
	}
	code, r, _ := one(t, Config{Targets: []string{qmtpAddr}, Protocol: probe.QMTP})
	if code != probe.OK || r.Heard != probe.Silence {
		t.Fatalf("QMTP: verdict %v, %+v", code, r)
	}
	code, r, _ = one(t, Config{Targets: []string{qmqpAddr}, Protocol: probe.QMQP})
	if code != probe.OK || r.Heard != probe.Silence {
		t.Fatalf("QMQP: verdict %v, %+v", code, r)
	}

	// --send over QMTP: K, and the message is in the maildir (twice: the
	// table run and the JSON run).
	code, r, _ = one(t, Config{Targets: []string{qmtpAddr}, Protocol: probe.QMTP, SendTo: "rcpt@example.test", From: "a@example.test"})
	if code != probe.OK || r.Send.Reply == nil || r.Send.Reply.Status != "K" {
		t.Fatalf("--send QMTP: verdict %v, %+v", code, r.Send)
	}
	entries, _ := os.ReadDir(filepath.Join(maildir, "new"))
	found := 0
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(maildir, "new", e.Name()))
		if bytes.Contains(b, []byte(r.Send.MessageID)) && bytes.Contains(b, []byte("This is a test message sent by qbox probe --send.")) {
			found++
		}
	}
	if found != 1 {
		t.Fatalf("message %s stored %d times in %s/new (%d files)", r.Send.MessageID, found, maildir, len(entries))
	}
}

func TestSplitTarget(t *testing.T) {
	for in, want := range map[string][2]string{
		"mx.example":      {"mx.example", ""},
		"mx.example:628":  {"mx.example", "628"},
		"127.0.0.1:209":   {"127.0.0.1", "209"},
		"::1":             {"::1", ""},
		"[::1]":           {"::1", ""},
		"[::1]:25":        {"::1", "25"},
		"2001:db8::1":     {"2001:db8::1", ""},
		"[2001:db8::1]:1": {"2001:db8::1", "1"},
	} {
		if h, p := splitTarget(in); h != want[0] || p != want[1] {
			t.Errorf("splitTarget(%q) = %q, %q, want %q, %q", in, h, p, want[0], want[1])
		}
	}
}

func TestColourOnlyWhenAsked(t *testing.T) {
	rs := []Result{{Target: "x", PortResult: probe.PortResult{Addr: "127.0.0.1:1", State: probe.Closed, Verdict: probe.Down, Note: "nothing listens"}}}
	var plain, coloured strings.Builder
	writeTable(&plain, rs, Config{})
	writeTable(&coloured, rs, Config{Color: true})
	if strings.Contains(plain.String(), "\x1b[") || !strings.Contains(coloured.String(), red+"down"+reset) {
		t.Fatalf("plain:\n%s\ncoloured:\n%q", plain.String(), coloured.String())
	}
}

// runBinary runs `qbox probe args...` and checks its exit status and
// output as a monitoring script sees them (and no colours on a pipe).
func runBinary(t *testing.T, args []string, wantCode int, wantOut string) {
	t.Helper()
	cmd := exec.Command(testpeer.Binary(t), append([]string{"probe"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	code := testpeer.ExitCode(t, cmd.Run())
	if code != wantCode || !strings.Contains(out.String(), wantOut) {
		t.Errorf("probe %v: exit %d, want %d; output lacks %q?\n%s", args, code, wantCode, wantOut, out.String())
	}
	if strings.Contains(out.String(), "\x1b[") {
		t.Errorf("probe %v: colours on a pipe:\n%s", args, out.String())
	}
}

// TestBinaryExitCodes runs the real binary against `qbox serve` and a
// closed port, and with bad invocations (the Postfix cases are in
// probe_peers_test.go).
func TestBinaryExitCodes(t *testing.T) {
	qmqpAddr, _, _ := serve(t)
	closed := testpeer.ClosedAddr(t)
	silent := blackHole(t)
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--qmqp", "--wait", "300ms", qmqpAddr}, 0, "open and silent"},
		{[]string{"--json", "--qmqp", "--wait", "300ms", qmqpAddr}, 0, `"heard": "silence"`},
		{[]string{"--qmtp", closed}, 2, "closed"},
		{[]string{"--json", "--qmtp", closed}, 2, `"verdict": "down"`},
		// README's Nagios check of a QMQP hub fails on a port that
		// accepts and says nothing, which a connect-only probe passes.
		{[]string{"--qmqp", "--wait", "300ms", silent}, 0, "open and silent"},
		{[]string{"--qmqp", "--send", "monitor-sink@example.org", "--timeout", "300ms", silent}, 1, "no reply"},
		{[]string{"--qmtp", "--qmqp", "127.0.0.1"}, 100, "at most one of"},
		{[]string{"--send", "x@example.test", "127.0.0.1:1234"}, 100, "--send needs one protocol"},
		{[]string{"127.0.0.1", "--qmqp"}, 100, "options go before the first HOST"},
	} {
		runBinary(t, c.args, c.code, c.out)
	}
}
