//go:build peers

package probe

// Tests against a private Postfix (qmqpd, smtpd; testpeer.StartPostfix)
// and mailfront under tcpserver: `go test -tags peers` (make test), as
// root.

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/probe"
	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
	"qbox/proto/testkit/testtls"
)

// greetWait is how long a probe waits for a real peer's greeting: Postfix
// starts an smtpd per connection, which can take a while on a busy CI
// machine. A banner ends the wait at once.
const greetWait = 5 * time.Second

func TestPostfixQMQPAuthorized(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	code, r, table := one(t, Config{Targets: []string{pf.QMQPAddr}, Protocol: probe.QMQP})
	if code != probe.OK || r.State != probe.Open || r.Heard != probe.Silence || r.ConnectMS <= 0 {
		t.Fatalf("verdict %v, %+v", code, r)
	}
	if !strings.Contains(table, "open and silent, as a QMQP server is") || !strings.Contains(table, "ok") {
		t.Fatalf("table:\n%s", table)
	}
}

func TestPostfixQMQPRefusedClient(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	code, r, table := one(t, Config{Targets: []string{pf.QMQPAddr}, Protocol: probe.QMQP, Source: "127.0.0.2", Wait: greetWait})
	if code != probe.Unexpected || r.Heard != probe.Netstring || r.Reply == nil || r.Reply.Status != "D" || !strings.Contains(r.Reply.Text, "not authorized") {
		t.Fatalf("verdict %v, %+v", code, r)
	}
	if !strings.Contains(table, `refused before any data: reply D "Error: unknown[127.0.0.2] is not authorized`) {
		t.Fatalf("table:\n%s", table)
	}
}

func TestPostfixSMTP(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	code, r, table := one(t, Config{Targets: []string{pf.SMTPAddr}, Protocol: probe.SMTP, Wait: greetWait})
	if code != probe.OK || r.Addr != pf.SMTPAddr || r.Heard != probe.SMTPBanner || r.SMTPCode != 220 || !strings.Contains(r.Banner, "ESMTP Postfix") {
		t.Fatalf("verdict %v, %+v", code, r)
	}
	if !strings.Contains(table, "SMTP greeting: 220 ") {
		t.Fatalf("table:\n%s", table)
	}
	// The same port where QMQP was expected: something else answered.
	code, r, _ = one(t, Config{Targets: []string{pf.SMTPAddr}, Protocol: probe.QMQP, Wait: greetWait})
	if code != probe.Unexpected || r.Heard != probe.SMTPBanner || !strings.Contains(r.Note, "an SMTP server, not QMQP") {
		t.Fatalf("SMTP on a QMQP probe: verdict %v, %+v", code, r)
	}
}

func TestMailfrontQMTP(t *testing.T) {
	addr := testpeer.Mailfront(t, "qmtp")
	code, r, _ := one(t, Config{Targets: []string{addr}, Protocol: probe.QMTP})
	if code != probe.OK || r.Heard != probe.Silence || r.Expect != probe.QMTP {
		t.Fatalf("verdict %v, %+v", code, r)
	}
	// Expecting SMTP there: silence is not a greeting.
	code, r, _ = one(t, Config{Targets: []string{addr}, Protocol: probe.SMTP})
	if code != probe.Unexpected || r.Heard != probe.Silence {
		t.Fatalf("SMTP expected: verdict %v, %+v", code, r)
	}
}

func TestDefaultPortsAndWorstCode(t *testing.T) {
	// 127.0.0.1 without a port: 628, 209 and 25 in that order, and the
	// exit code is the worst of the three, whatever this machine has on
	// those ports (the tests' Postfix is a private one on ports of its
	// own; the host's, if any, is only probed).
	code, rs, _ := runProbe(t, Config{Targets: []string{"127.0.0.1"}, Wait: greetWait})
	if len(rs) != 3 {
		t.Fatalf("%d results", len(rs))
	}
	worst := probe.OK
	for i, want := range []struct {
		addr   string
		expect probe.Protocol
	}{{"127.0.0.1:628", probe.QMQP}, {"127.0.0.1:209", probe.QMTP}, {"127.0.0.1:25", probe.SMTP}} {
		if rs[i].Addr != want.addr || rs[i].Expect != want.expect {
			t.Errorf("result %d: %s %s, want %s %s", i, rs[i].Addr, rs[i].Expect, want.addr, want.expect)
		}
		worst = max(worst, rs[i].Verdict)
	}
	if code != worst {
		t.Fatalf("verdict %v, results %+v", code, rs)
	}
}

func TestSendPostfixQMQP(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	rcpt := token + "@" + pf.Domain
	code, r, table := one(t, Config{Targets: []string{pf.QMQPAddr}, Protocol: probe.QMQP, SendTo: rcpt, From: "probe@example.test"})
	if code != probe.OK || r.Send == nil || r.Send.Reply == nil || r.Send.Reply.Status != "K" || !strings.Contains(r.Send.Reply.Text, "queued as") {
		t.Fatalf("verdict %v, %+v %+v", code, r, r.Send)
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
	code, r, _ = one(t, Config{Targets: []string{pf.QMQPAddr}, Protocol: probe.QMQP, SendTo: rcpt, Source: "127.0.0.2"})
	if code != probe.Unexpected || r.Send.Reply == nil || r.Send.Reply.Status != "D" {
		t.Fatalf("refused: verdict %v, %+v", code, r.Send)
	}
}

func TestSendPostfixSMTP(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	code, r, table := one(t, Config{Targets: []string{pf.SMTPAddr}, Protocol: probe.SMTP, SendTo: token + "@" + pf.Domain, From: ""})
	if code != probe.OK || r.Send.Reply == nil || r.Send.Reply.Status != "K" || !strings.HasPrefix(r.Send.Reply.Text, "250") {
		t.Fatalf("verdict %v, %+v", code, r.Send)
	}
	pf.WaitFor(t, token, 2, 30*time.Second)
	for _, want := range []string{"greeting -> 220", "RCPT -> 250", "end of data -> 250", "QUIT -> 221"} {
		if !strings.Contains(table, want) {
			t.Fatalf("table lacks %q:\n%s", want, table)
		}
	}
	// A recipient Postfix refuses: D, exit 1.
	code, r, _ = one(t, Config{Targets: []string{pf.SMTPAddr}, Protocol: probe.SMTP, SendTo: "someone@elsewhere.invalid", From: "a@example.test"})
	if code != probe.Unexpected || r.Send.Reply == nil || r.Send.Reply.Status != "D" {
		t.Fatalf("refused recipient: verdict %v, %+v", code, r.Send)
	}
}

func TestSendMailfrontQMTP(t *testing.T) {
	addr := testpeer.Mailfront(t, "qmtp")
	code, r, _ := one(t, Config{Targets: []string{addr}, Protocol: probe.QMTP, SendTo: "rcpt@example.test", From: "a@example.test"})
	if code != probe.OK || r.Send.Reply == nil || r.Send.Reply.Status != "K" {
		t.Fatalf("verdict %v, %+v", code, r.Send)
	}
}

// TestBinaryExitCodesPostfix runs the real binary against Postfix: exit
// codes and output as a monitoring script sees them.
func TestBinaryExitCodesPostfix(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--qmqp", "--wait", "300ms", pf.QMQPAddr}, 0, "open and silent"},
		{[]string{"--qmqp", "--wait", "5s", "--source", "127.0.0.2", pf.QMQPAddr}, 1, "not authorized"},
		{[]string{"--qmqp", "--wait", "5s", pf.SMTPAddr}, 1, "an SMTP server, not QMQP"},
		{[]string{"--json", "--smtp", "--wait", "5s", pf.SMTPAddr}, 0, `"banner": "220 `},
	} {
		runBinary(t, c.args, c.code, c.out)
	}
}

// --tls --send: the test message goes inside TLS, to qbox serve's QMQPS
// and QMTPS ports, and only when the certificate verifies; against the
// system roots (which do not hold the test's CA) nothing is sent.
func TestSendInsideTLS(t *testing.T) {
	ca := testtls.NewCA(t, "probe send CA")
	dir := t.TempDir()
	caFile, certFile, keyFile := ca.Files(t, dir, "127.0.0.1")
	maildir := filepath.Join(dir, "Maildir")
	s := testpeer.StartServe(t, "--maildir", maildir, "--qmqp", "", "--qmtp", "",
		"--qmqps", "127.0.0.1:0", "--qmtps", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	for _, c := range []struct {
		addr     string
		protocol probe.Protocol
	}{{s.QMQPS, probe.QMQP}, {s.QMTPS, probe.QMTP}} {
		code, r, table := one(t, Config{Targets: []string{c.addr}, Protocol: c.protocol, TLS: true, TLSCA: caFile,
			SendTo: "probe@example.test", From: "probe@example.test"})
		if code != probe.OK || r.Send == nil || r.Send.Reply == nil || r.Send.Reply.Status != "K" || r.TLS == nil || !r.TLS.Verified {
			t.Fatalf("%s inside TLS: verdict %v, %+v %+v", c.protocol, code, r, r.Send)
		}
		if !strings.Contains(table, "TLS: TLS 1.3") || !strings.Contains(table, "reply: K ok") {
			t.Fatalf("table:\n%s", table)
		}
	}
	// Two runs each (table and JSON): four messages.
	if n := counting.Files(t, filepath.Join(maildir, "new")); n != 4 {
		t.Fatalf("%d messages stored, want 4", n)
	}
	code, r, table := one(t, Config{Targets: []string{s.QMQPS}, Protocol: probe.QMQP, TLS: true, SendTo: "probe@example.test"})
	if code != probe.Unexpected || r.Send == nil || r.Send.Reply != nil || !strings.Contains(r.Note, "NOT verified") {
		t.Fatalf("unverified: verdict %v, %+v %+v\n%s", code, r, r.Send, table)
	}
	if n := counting.Files(t, filepath.Join(maildir, "new")); n != 4 {
		t.Fatalf("%d messages stored after the unverified runs, want still 4", n)
	}
}
