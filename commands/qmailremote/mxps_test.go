package qmailremote

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/testpeer"
)

// MXPS against a real DNS server, without peers (the SMTP cases into
// Postfix are TestMXPSToPostfixSMTP in rspawn_peers_test.go): a QMTP
// exchanger (preference 12801) with its QMTP port open gets the message
// over QMTP, into qbox serve; a QMTP session that fails after connecting
// is not followed by SMTP (Z, no SMTP connection); nothing reachable is
// Z; NXDOMAIN is D, SERVFAIL Z.
func TestMXPS(t *testing.T) {
	qmtpAddr, dest := serveQMTP(t)
	zone := dnstest.Start(t, dnstest.Zone{
		Records: []string{
			"qmtp.test. 300 IN MX 12801 mx.qmtp.test.",
			"mx.qmtp.test. 300 IN A 127.0.0.1",
		},
		Rcode: map[string]int{"broken.test": dns.RcodeServerFailure},
	})
	env := func(qmtpPort, smtpPort string) []string {
		return []string{EnvResolver + "=" + zone.Addr, EnvQMTPPort + "=" + qmtpPort, EnvSMTPPort + "=" + smtpPort}
	}

	t.Run("qmtp open", func(t *testing.T) {
		token := testpeer.Token(t)
		msg := testMessage(token)
		res := newRun(t, env(portOf(qmtpAddr), closedPort(t))...).remote(t, msg, "qmtp.test", "sender@example.test", "mxps@example.test")
		if res.letters() != "rK" || !strings.Contains(res.message, "over QMTP") {
			t.Fatalf("reports %q, want QMTP to serve", res.raw)
		}
		found := false
		for _, m := range stored(t, dest) {
			if bytes.HasSuffix(m, msg) {
				found = true
			}
		}
		if !found {
			t.Error("serve did not store the message as sent")
		}
	})
	t.Run("qmtp session fails, no smtp", func(t *testing.T) {
		failing, qmtpConns := scriptedSMTP(t, nil, "", true) // accepts, closes
		smtpAddr, smtpConns := scriptedSMTP(t, nil, "250 ok", false)
		res := newRun(t, env(portOf(failing), portOf(smtpAddr))...).remote(t, testMessage("x"), "qmtp.test", "sender@example.test", "a@qmtp.test", "b@qmtp.test")
		if res.letters() != "Z" || !strings.HasPrefix(res.message, "ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n") {
			t.Fatalf("reports %q", res.raw)
		}
		// qmail-remote has exited: its connections are queued at the
		// listeners, maybe not yet counted. A marker connection of our own
		// to the SMTP listener is queued behind any it made, so once the
		// marker is counted the count is final.
		if !counting.WaitAtLeast(qmtpConns, 1) {
			t.Fatal("the QMTP port was never reached")
		}
		c, err := net.Dial("tcp", smtpAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if !counting.WaitAtLeast(smtpConns, 1) || smtpConns.Load() != 1 {
			t.Errorf("%d SMTP connections after a QMTP session had started", smtpConns.Load()-1)
		}
	})
	t.Run("no exchanger reachable", func(t *testing.T) {
		res := newRun(t, env(closedPort(t), closedPort(t))...).remote(t, testMessage("x"), "qmtp.test", "sender@example.test", "a@qmtp.test")
		if res.letters() != "Z" || !strings.HasPrefix(res.message, "ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n") {
			t.Fatalf("reports %q", res.raw)
		}
	})
	t.Run("nxdomain", func(t *testing.T) {
		res := newRun(t, env("209", "25")...).remote(t, testMessage("x"), "nx.test", "sender@example.test", "a@nx.test")
		if res.message != "DSorry, I couldn't find any host named nx.test. (#5.1.2)\n" || res.letters() != "D" {
			t.Fatalf("reports %q", res.raw)
		}
	})
	t.Run("servfail", func(t *testing.T) {
		res := newRun(t, env("209", "25")...).remote(t, testMessage("x"), "broken.test", "sender@example.test", "a@broken.test")
		if res.letters() != "Z" || !strings.HasPrefix(res.message, "ZSorry, I couldn't find any host by that name. (#4.1.2)\n") {
			t.Fatalf("reports %q", res.raw)
		}
	})
}
