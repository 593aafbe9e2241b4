//go:build peers

package qmailremote

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/testpeer"
)

// postfixRun is a qmail-remote run whose [127.0.0.1] is the test's
// private Postfix: SMTP on its port (QBOX_SMTP_PORT), QMTP on a closed one.
func postfixRun(t *testing.T, pf *testpeer.Postfix) *run {
	t.Helper()
	return newRun(t, EnvSMTPPort+"="+portOf(pf.SMTPAddr), EnvQMTPPort+"="+closedPort(t))
}

// The [127.0.0.1] literal into Postfix's smtpd: every recipient accepted
// ('r' each, then K with Postfix's 250); the message Postfix delivers
// ends with exactly the bytes given (dots and 8-bit included).
func TestSMTPPostfixAllAccepted(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	msg := testMessage(token)
	res := postfixRun(t, pf).remote(t, msg, "[127.0.0.1]", "sender@example.test", "one-"+token+"@"+pf.Domain, "two-"+token+"@"+pf.Domain)
	if res.letters() != "rrK" || !strings.HasPrefix(res.message, "K127.0.0.1 accepted message.\nRemote host said: 250 ") {
		t.Fatalf("reports %q", res.raw)
	}
	for _, m := range pf.WaitFor(t, token, 2, 30*time.Second) {
		if !bytes.HasSuffix(m, msg) {
			t.Errorf("Postfix delivered\n%q\nwant it to end with\n%q", m, msg)
		}
	}
}

// One recipient Postfix refuses with a 5xx among good ones: 'h' with
// "Remote host said: 550 ..." in its place, the others 'r', the message
// K; the good ones are delivered once.
func TestSMTPPostfixOneRefused(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	msg := testMessage(token)
	res := postfixRun(t, pf).remote(t, msg, "[127.0.0.1]", "sender@example.test",
		"one-"+token+"@"+pf.Domain, "nobody@nonexistent.invalid", "two-"+token+"@"+pf.Domain)
	if res.letters() != "rhrK" {
		t.Fatalf("reports %q, want r h r K", res.raw)
	}
	if h := res.recipients[1]; !strings.HasPrefix(h, "h127.0.0.1 does not like recipient.\nRemote host said: 550 ") || strings.Count(h, "\n") != 2 {
		t.Errorf("refused recipient's report %q", h)
	}
	// qmail-rspawn, run for the refused recipient alone, bounces it.
	one := postfixRun(t, pf).remote(t, msg, "[127.0.0.1]", "sender@example.test", "nobody@nonexistent.invalid")
	if v := verdict(one.raw); !strings.HasPrefix(v, "D127.0.0.1 does not like recipient.\nRemote host said: 550 ") {
		t.Errorf("qmail-rspawn's verdict for the refused recipient %q (reports %q)", v, one.raw)
	}
	pf.WaitFor(t, token, 2, 30*time.Second)
}

// mailfrontSMTP runs mailfront's smtpfront-echo under tcpserver: z-*
// recipients get a 4xx, d-* a 5xx, the others are accepted.
func mailfrontSMTP(t *testing.T) string {
	t.Helper()
	rules := filepath.Join(t.TempDir(), "mailrules")
	if err := os.WriteFile(rules, []byte(":recipient\nz*:z-*:try again later\nd*:d-*:no such user here\nk*:*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	prog := testpeer.Require(t, "smtpfront-echo", "mailfront")
	return testpeer.TCPServer(t, []string{"PLUGINS=mailrules:accept", "MAILRULES=" + rules}, prog)
}

// smtproutes with a port sends the domain to mailfront's smtpfront-echo:
// a 4xx recipient is 's', a 5xx 'h', the accepted 'r', the message K;
// qmail-rspawn defers the 4xx one.
func TestSMTPRouteTempfail(t *testing.T) {
	addr := mailfrontSMTP(t)
	r := newRun(t)
	route := "127.0.0.1:" + portOf(addr)
	r.control(t, "smtproutes", "# comment\nother.test:192.0.2.1\n.route.test:"+route+"\nroute.test:"+route+"\n")
	res := r.remote(t, testMessage("x"), "mx.route.test", "sender@example.test", "k-1@route.test", "z-2@route.test", "d-3@route.test")
	if res.letters() != "rshK" {
		t.Fatalf("reports %q, want r s h K", res.raw)
	}
	if s := res.recipients[1]; !strings.HasPrefix(s, "s127.0.0.1 does not like recipient.\nRemote host said: 4") || !strings.Contains(s, "try again later") {
		t.Errorf("4xx recipient's report %q", s)
	}
	one := r.remote(t, testMessage("x"), "route.test", "sender@example.test", "z-2@route.test")
	if v := verdict(one.raw); !strings.HasPrefix(v, "Z127.0.0.1 does not like recipient.") {
		t.Errorf("qmail-rspawn's verdict for the 4xx recipient %q", v)
	}
}

// MXPS with SMTP into Postfix (the rest of TestMXPS, in rspawn_test.go,
// needs no peer): the QMTP port closed, the same exchanger over SMTP; an
// SMTP-only domain, by MX or by its address record, over SMTP.
func TestMXPSToPostfixSMTP(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	zone := dnstest.Start(t, dnstest.Zone{
		Records: []string{
			"qmtp.test. 300 IN MX 12801 mx.qmtp.test.",
			"mx.qmtp.test. 300 IN A 127.0.0.1",
			"smtponly.test. 300 IN MX 10 mx.smtponly.test.",
			"mx.smtponly.test. 300 IN A 127.0.0.1",
			"implicit.test. 300 IN A 127.0.0.1",
		},
	})
	rcpt := func(token string) string {
		return "mxps-" + strings.Map(func(c rune) rune {
			if c == ',' || c == ' ' {
				return '_'
			}
			return c
		}, token) + "@" + pf.Domain
	}
	env := func(qmtpPort, smtpPort string) []string {
		return []string{EnvResolver + "=" + zone.Addr, EnvQMTPPort + "=" + qmtpPort, EnvSMTPPort + "=" + smtpPort}
	}

	t.Run("qmtp closed, smtp used", func(t *testing.T) {
		token := testpeer.Token(t)
		msg := testMessage(token)
		res := newRun(t, env(closedPort(t), portOf(pf.SMTPAddr))...).remote(t, msg, "qmtp.test", "sender@example.test", rcpt(token))
		if res.letters() != "rK" || !strings.HasPrefix(res.message, "K127.0.0.1 accepted message.\nRemote host said: 250 ") {
			t.Fatalf("reports %q, want SMTP to Postfix", res.raw)
		}
		if m := pf.WaitFor(t, token, 1, 30*time.Second); !bytes.HasSuffix(m[0], msg) {
			t.Errorf("Postfix delivered %q", m[0])
		}
	})
	t.Run("smtp only", func(t *testing.T) {
		token := testpeer.Token(t)
		for _, host := range []string{"smtponly.test", "implicit.test"} {
			res := newRun(t, env(closedPort(t), portOf(pf.SMTPAddr))...).remote(t, testMessage(token), host, "sender@example.test", rcpt(token))
			if res.letters() != "rK" || strings.Contains(res.message, "QMTP") {
				t.Fatalf("%s: reports %q", host, res.raw)
			}
		}
		pf.WaitFor(t, token, 2, 30*time.Second)
	})
}

// Interface: fewer than three arguments is qmail-remote's usage D; a
// sender with CR or LF is D before anything is sent; a recipient with one
// is 'h' in its place while the others are delivered; a message on a pipe
// (not the file qmail-rspawn gives) is sent all the same.
func TestInterfaceAndHostileAddresses(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	r := postfixRun(t, pf)
	res := r.remote(t, testMessage("x"), "[127.0.0.1]", "sender@example.test")
	if res.raw == nil || string(res.raw) != "DI (qmail-remote) was invoked improperly. (#5.3.5)\n\x00" {
		t.Errorf("usage: %q", res.raw)
	}
	res = r.remote(t, testMessage("x"), "[127.0.0.1]", "evil\r\nRCPT TO:<x@example.test>", "a@"+pf.Domain)
	if res.letters() != "D" || !strings.Contains(res.message, "CR, LF or NUL") {
		t.Errorf("hostile sender: %q", res.raw)
	}
	token := testpeer.Token(t)
	msg := testMessage(token)
	res = r.remoteFrom(t, msg, 3, "[127.0.0.1]", "sender@example.test", "one-"+token+"@"+pf.Domain, "x@"+pf.Domain+">\r\nDATA", "two-"+token+"@"+pf.Domain)
	if res.letters() != "rhrK" || !strings.HasPrefix(res.recipients[1], "hRecipient address is empty or contains CR, LF or NUL") {
		t.Fatalf("hostile recipient: %q", res.raw)
	}
	for _, m := range pf.WaitFor(t, token, 2, 30*time.Second) {
		if !bytes.HasSuffix(m, msg) {
			t.Errorf("Postfix delivered %q", m)
		}
	}
}
