package flush

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/testpeer"
)

// MXPS's rule for flush-maildir without peers (the SMTP cases into
// Postfix are TestFlushMXPSFallback in smtp_peers_test.go; SMTP into qbox
// serve is TestFlushMXPSToServeSMTP): a QMTP exchanger with its port open
// takes every message over QMTP; a QMTP session that fails after
// connecting keeps the messages and is not followed by SMTP.
func TestFlushMXPSQMTPRule(t *testing.T) {
	qmtpAddr, dest := serve(t)
	dns := dnstest.Start(t, dnstest.Zone{Records: []string{
		"qmtp.test. 300 IN MX 12801 mx.qmtp.test.",
		"mx.qmtp.test. 300 IN A 127.0.0.1",
	}})
	run := func(domain, qmtpPort, smtpPort string, n int, token string) (jsonReport, int, string) {
		src := newMaildir(t)
		for i := 0; i < n; i++ {
			enqueue(t, src, fmt.Sprintf("170000000%d.m", i), "s@example.test", fmt.Sprintf("ppp-%s-%d@example.test", strings.TrimSuffix(domain, ".test"), i),
				[]byte("Subject: "+token+"\n\nx\n"), time.Minute)
		}
		stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--mxps", domain, "--resolver", dns.Addr, "--qmtp-port", qmtpPort,
			"--smtp-port", smtpPort, "--helo", testHelo, "--json", src, "ppp-")
		return parseJSON(t, stdout), code, stderr + fmt.Sprint(remaining(t, src))
	}
	protocols := func(r jsonReport) string {
		var p []string
		for _, o := range r.Messages {
			p = append(p, o.Status+"/"+o.Protocol+"/"+o.Server)
		}
		return strings.Join(p, " ")
	}

	t.Run("qmtp open", func(t *testing.T) {
		token := testpeer.Token(t)
		r, code, more := run("qmtp.test", portOf(qmtpAddr), portOf(testpeer.ClosedAddr(t)), 2, token)
		want := "succeeded/QMTP/mx.qmtp.test " + qmtpAddr
		if code != 0 || protocols(r) != want+" "+want {
			t.Fatalf("exit %d, outcomes %s, want QMTP to serve (%s)", code, protocols(r), more)
		}
		if got, _ := delivered(t, dest); len(got) < 2 {
			t.Errorf("serve stored %d", len(got))
		}
	})
	t.Run("qmtp session fails", func(t *testing.T) {
		failing, qmtpConns := countingListener(t)
		smtpAddr, smtpConns := countingListener(t)
		r, code, more := run("qmtp.test", portOf(failing), portOf(smtpAddr), 2, testpeer.Token(t))
		if code != 111 || r.Summary.Remaining != 2 || r.Summary.Succeeded != 0 {
			t.Fatalf("exit %d, summary %+v, want both kept (%s)", code, r.Summary, more)
		}
		// flush-maildir has exited: its connections are queued at the
		// listeners, maybe not yet counted. A marker connection of our own
		// to the SMTP listener is queued behind any it made, so once the
		// marker is counted the count is final.
		if !counting.WaitAtLeast(qmtpConns, 1) {
			t.Fatal("the QMTP exchanger was never reached")
		}
		if c, err := net.Dial("tcp", smtpAddr); err == nil {
			c.Close()
		} else {
			t.Fatal(err)
		}
		if !counting.WaitAtLeast(smtpConns, 1) || smtpConns.Load() != 1 {
			t.Errorf("%d SMTP connections after a QMTP session had started", smtpConns.Load()-1)
		}
	})
}
