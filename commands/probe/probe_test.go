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

	"qbox/proto/testpeer"
)

// greetWait is how long a probe waits for a real peer's greeting: Postfix
// starts an smtpd per connection, which can take a while on a busy CI
// machine. A banner ends the wait at once.
const greetWait = 5 * time.Second

// probe runs the command's core and returns its exit code, the decoded
// JSON results and the table.
func probe(t *testing.T, cfg Config) (int, []Result, string) {
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
		t.Fatalf("exit %d for the table, %d for --json", code, jcode)
	}
	return code, results, table.String()
}

func one(t *testing.T, cfg Config) (int, Result, string) {
	t.Helper()
	code, rs, table := probe(t, cfg)
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1: %+v", len(rs), rs)
	}
	return code, rs[0], table
}

func TestPostfixQMQPAuthorized(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	code, r, table := one(t, Config{Targets: []string{pf.QMQPAddr}, Protocol: QMQP})
	if code != 0 || r.State != Open || r.Heard != Silence || r.ConnectMS <= 0 {
		t.Fatalf("exit %d, %+v", code, r)
	}
	if !strings.Contains(table, "open and silent, as a QMQP server is") || !strings.Contains(table, "ok") {
		t.Fatalf("table:\n%s", table)
	}
}

func TestPostfixQMQPRefusedClient(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	code, r, table := one(t, Config{Targets: []string{pf.QMQPAddr}, Protocol: QMQP, Source: "127.0.0.2", Wait: greetWait})
	if code != CodeUnexpected || r.Heard != Netstring || r.Reply == nil || r.Reply.Status != "D" || !strings.Contains(r.Reply.Text, "not authorized") {
		t.Fatalf("exit %d, %+v", code, r)
	}
	if !strings.Contains(table, `refused before any data: reply D "Error: unknown[127.0.0.2] is not authorized`) {
		t.Fatalf("table:\n%s", table)
	}
}

func TestPostfixSMTP(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	code, r, table := one(t, Config{Targets: []string{"127.0.0.1"}, Protocol: SMTP, Wait: greetWait})
	if code != 0 || r.Addr != pf.SMTPAddr || r.Heard != SMTPBanner || r.SMTPCode != 220 || !strings.Contains(r.Banner, "ESMTP Postfix") {
		t.Fatalf("exit %d, %+v", code, r)
	}
	if !strings.Contains(table, "SMTP greeting: 220 ") {
		t.Fatalf("table:\n%s", table)
	}
	// The same port where QMQP was expected: something else answered.
	code, r, _ = one(t, Config{Targets: []string{pf.SMTPAddr}, Protocol: QMQP, Wait: greetWait})
	if code != CodeUnexpected || r.Heard != SMTPBanner || !strings.Contains(r.Note, "an SMTP server, not QMQP") {
		t.Fatalf("SMTP on a QMQP probe: exit %d, %+v", code, r)
	}
}

func TestMailfrontQMTP(t *testing.T) {
	addr := testpeer.Mailfront(t, "qmtp")
	code, r, _ := one(t, Config{Targets: []string{addr}, Protocol: QMTP})
	if code != 0 || r.Heard != Silence || r.Expect != QMTP {
		t.Fatalf("exit %d, %+v", code, r)
	}
	// Expecting SMTP there: silence is not a greeting.
	code, r, _ = one(t, Config{Targets: []string{addr}, Protocol: SMTP})
	if code != CodeUnexpected || r.Heard != Silence {
		t.Fatalf("SMTP expected: exit %d, %+v", code, r)
	}
}

func TestClosedPort(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	code, r, table := one(t, Config{Targets: []string{addr}, Protocol: QMTP})
	if code != CodeDown || r.State != Closed {
		t.Fatalf("exit %d, %+v", code, r)
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
	code, r, _ := one(t, Config{Targets: []string{addr}, Protocol: QMQP})
	if code != 0 || r.Heard != Silence {
		t.Fatalf("exit %d, %+v", code, r)
	}
	// Submitting shows the difference: no reply.
	code, r, table := one(t, Config{Targets: []string{addr}, Protocol: QMQP, SendTo: "nobody@example.test", Timeout: 300 * time.Millisecond})
	if code != CodeUnexpected || r.Send == nil || r.Send.Reply != nil || r.Send.Error == "" {
		t.Fatalf("--send: exit %d, %+v %+v", code, r, r.Send)
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
	code, r, _ := one(t, Config{Targets: []string{addr}, Protocol: QMTP, Timeout: 300 * time.Millisecond})
	if code != CodeDown || r.State != Filtered {
		t.Fatalf("exit %d, %+v", code, r)
	}
}

func TestDefaultPortsAndWorstCode(t *testing.T) {
	// 127.0.0.1 without a port: 628, 209 and 25 in that order. Whatever
	// is on 628 and 209 on this machine, Postfix answers on 25, and the
	// exit code is the worst of the three.
	testpeer.StartPostfix(t)
	code, rs, _ := probe(t, Config{Targets: []string{"127.0.0.1"}, Wait: greetWait})
	if len(rs) != 3 {
		t.Fatalf("%d results", len(rs))
	}
	worst := 0
	for i, want := range []struct {
		addr   string
		expect Protocol
	}{{"127.0.0.1:628", QMQP}, {"127.0.0.1:209", QMTP}, {"127.0.0.1:25", SMTP}} {
		if rs[i].Addr != want.addr || rs[i].Expect != want.expect {
			t.Errorf("result %d: %s %s, want %s %s", i, rs[i].Addr, rs[i].Expect, want.addr, want.expect)
		}
		worst = max(worst, rs[i].Code)
	}
	if rs[2].Code != 0 || code != worst {
		t.Fatalf("exit %d, results %+v", code, rs)
	}
}

func TestSendPostfixQMQP(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	rcpt := token + "@" + pf.Domain
	code, r, table := one(t, Config{Targets: []string{pf.QMQPAddr}, Protocol: QMQP, SendTo: rcpt, From: "probe@example.test"})
	if code != 0 || r.Send == nil || r.Send.Reply == nil || r.Send.Reply.Status != "K" || !strings.Contains(r.Send.Reply.Text, "queued as") {
		t.Fatalf("exit %d, %+v %+v", code, r, r.Send)
	}
	// Two runs (table and JSON) sent two messages.
	msgs := pf.WaitFor(t, token, 2, 30*time.Second)
	for _, m := range msgs {
		if !bytes.Contains(m, []byte("This is a test message sent by qbox probe --send.")) || !bytes.Contains(m, []byte("Return-Path: <probe@example.test>")) {
			t.Fatalf("delivered:\n%s", m)
		}
	}
	if !strings.Contains(table, "reply: K Ok: queued as") || !strings.Contains(table, "first reply byte") {
		t.Fatalf("table:\n%s", table)
	}
	if r.Send.TotalMS <= 0 || r.Send.TotalMS < r.Send.ConnectMS {
		t.Fatalf("timings %+v", r.Send)
	}

	// A refused client gets D and exit 1, and nothing is delivered.
	code, r, _ = one(t, Config{Targets: []string{pf.QMQPAddr}, Protocol: QMQP, SendTo: rcpt, Source: "127.0.0.2"})
	if code != CodeUnexpected || r.Send.Reply == nil || r.Send.Reply.Status != "D" {
		t.Fatalf("refused: exit %d, %+v", code, r.Send)
	}
}

func TestSendPostfixSMTP(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	code, r, table := one(t, Config{Targets: []string{pf.SMTPAddr}, SendTo: token + "@" + pf.Domain, From: ""})
	if code != 0 || r.Send.Reply == nil || r.Send.Reply.Status != "K" || !strings.HasPrefix(r.Send.Reply.Text, "250") {
		t.Fatalf("exit %d, %+v", code, r.Send)
	}
	pf.WaitFor(t, token, 2, 30*time.Second)
	for _, want := range []string{"greeting -> 220", "RCPT -> 250", "end of data -> 250", "QUIT -> 221"} {
		if !strings.Contains(table, want) {
			t.Fatalf("table lacks %q:\n%s", want, table)
		}
	}
	// A recipient Postfix refuses: D, exit 1.
	code, r, _ = one(t, Config{Targets: []string{pf.SMTPAddr}, SendTo: "someone@elsewhere.invalid", From: "a@example.test"})
	if code != CodeUnexpected || r.Send.Reply == nil || r.Send.Reply.Status != "D" {
		t.Fatalf("refused recipient: exit %d, %+v", code, r.Send)
	}
}

func TestSendMailfrontQMTP(t *testing.T) {
	addr := testpeer.Mailfront(t, "qmtp")
	code, r, _ := one(t, Config{Targets: []string{addr}, Protocol: QMTP, SendTo: "rcpt@example.test", From: "a@example.test"})
	if code != 0 || r.Send.Reply == nil || r.Send.Reply.Status != "K" {
		t.Fatalf("exit %d, %+v", code, r.Send)
	}
}

// serve starts the qbox binary's QMQP and QMTP server on free ports
// with a maildir store and returns both addresses and the maildir.
func serve(t *testing.T) (qmqpAddr, qmtpAddr, maildir string) {
	t.Helper()
	bin := testpeer.Binary(t)
	maildir = filepath.Join(t.TempDir(), "Maildir")
	qmqpAddr = "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	qmtpAddr = "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	testpeer.Start(t, nil, bin, "serve", "--maildir", maildir, "--qmqp", qmqpAddr, "--qmtp", qmtpAddr)
	testpeer.WaitListening(t, qmqpAddr, 10*time.Second)
	testpeer.WaitListening(t, qmtpAddr, 10*time.Second)
	return
}

func TestQboxServe(t *testing.T) {
	qmqpAddr, qmtpAddr, maildir := serve(t)
	code, rs, _ := probe(t, Config{Targets: []string{qmqpAddr + "", qmtpAddr}, Protocol: Unknown, Wait: 500 * time.Millisecond})
	// Non-standard ports and no protocol flag: reported, judged by what
	// was heard only.
	if code != 0 || rs[0].Heard != Silence || rs[1].Heard != Silence {
		t.Fatalf("exit %d, %+v", code, rs)
	}
	code, r, _ := one(t, Config{Targets: []string{qmtpAddr}, Protocol: QMTP})
	if code != 0 || r.Heard != Silence {
		t.Fatalf("QMTP: exit %d, %+v", code, r)
	}
	code, r, _ = one(t, Config{Targets: []string{qmqpAddr}, Protocol: QMQP})
	if code != 0 || r.Heard != Silence {
		t.Fatalf("QMQP: exit %d, %+v", code, r)
	}

	// --send over QMTP: K, and the message is in the maildir (twice: the
	// table run and the JSON run).
	code, r, _ = one(t, Config{Targets: []string{qmtpAddr}, Protocol: QMTP, SendTo: "rcpt@example.test", From: "a@example.test"})
	if code != 0 || r.Send.Reply == nil || r.Send.Reply.Status != "K" {
		t.Fatalf("--send QMTP: exit %d, %+v", code, r.Send)
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

// TestBinaryExitCodes runs the real binary: exit codes and output as a
// monitoring script sees them.
func TestBinaryExitCodes(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	bin := testpeer.Binary(t)
	closed := "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--qmqp", "--wait", "300ms", pf.QMQPAddr}, 0, "open and silent"},
		{[]string{"--qmqp", "--wait", "5s", "--source", "127.0.0.2", pf.QMQPAddr}, 1, "not authorized"},
		{[]string{"--qmqp", "--wait", "5s", pf.SMTPAddr}, 1, "an SMTP server, not QMQP"},
		{[]string{"--qmtp", closed}, 2, "closed"},
		{[]string{"--json", "--smtp", "--wait", "5s", "127.0.0.1"}, 0, `"banner": "220 `},
		{[]string{"--qmtp", "--qmqp", "127.0.0.1"}, 100, "at most one of"},
		{[]string{"--send", "x@example.test", "127.0.0.1:1234"}, 100, "--send needs one protocol"},
		{[]string{"127.0.0.1", "--qmqp"}, 100, "options go before the first HOST"},
	}
	for _, c := range cases {
		cmd := exec.Command(bin, append([]string{"probe"}, c.args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		code := testpeer.ExitCode(t, cmd.Run())
		if code != c.code || !strings.Contains(out.String(), c.out) {
			t.Errorf("probe %v: exit %d, want %d; output lacks %q?\n%s", c.args, code, c.code, c.out, out.String())
		}
		if strings.Contains(out.String(), "\x1b[") {
			t.Errorf("probe %v: colours on a pipe:\n%s", c.args, out.String())
		}
	}
}

// TestSendSMTPEndlessReply: a server that never ends its greeting line
// is cut off at maxSMTPRead, not read into memory for ever.
func TestSendSMTPEndlessReply(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("220 "))
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		for i := 0; i < 4*maxSMTPRead/len(chunk); i++ {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	p := &Prober{ConnectTimeout: 2 * time.Second}
	r := p.Send(context.Background(), l.Addr().String(), SMTP, "a@example.test", "b@example.test", 5*time.Second)
	if r.Code != CodeUnexpected || r.Reply != nil || !strings.Contains(r.Error, "more than") {
		t.Fatalf("%+v", r)
	}
}
