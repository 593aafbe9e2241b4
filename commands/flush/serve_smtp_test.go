package flush

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/testpeer"
)

// flush-maildir --mxps to a QMTP exchanger that runs only `qbox serve
// --smtp` (its QMTP port closed): every message goes through the SMTP
// port, is stored once with the bytes queued (dots included), and leaves
// the queue.
func TestFlushMXPSToServeSMTP(t *testing.T) {
	dest := t.TempDir() + "/dest"
	smtpAddr := testpeer.StartServe(t, "--qmqp", "", "--qmtp", "", "--smtp", "127.0.0.1:0", "--maildir", dest).SMTP
	closed := portOf(testpeer.ClosedAddr(t))
	dns := dnstest.Start(t, dnstest.Zone{Records: []string{
		"qmtp.test. 300 IN MX 12801 mx.qmtp.test.",
		"mx.qmtp.test. 300 IN A 127.0.0.1",
	}})
	src := newMaildir(t)
	token := testpeer.Token(t)
	want := map[string][]byte{}
	for i := 0; i < 3; i++ {
		rcpt := fmt.Sprintf("r%d@qmtp.test", i)
		body := []byte(fmt.Sprintf("Subject: %s %d\n\n.leading dot\n.\nlast\n", token, i))
		enqueue(t, src, fmt.Sprintf("170000000%d.m", i), "s@example.test", "ppp-"+rcpt, body, time.Minute)
		want[rcpt] = body
	}
	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--mxps", "qmtp.test", "--resolver", dns.Addr,
		"--qmtp-port", closed, "--smtp-port", portOf(smtpAddr), "--helo", testHelo, "--json", src, "ppp-")
	r := parseJSON(t, stdout)
	if code != 0 || r.Summary.Succeeded != 3 {
		t.Fatalf("exit %d, summary %+v, stderr %q", code, r.Summary, stderr)
	}
	for _, o := range r.Messages {
		if o.Protocol != "SMTP" || o.Server != "mx.qmtp.test "+smtpAddr {
			t.Errorf("outcome %+v, want SMTP to %s", o, smtpAddr)
		}
	}
	got, count := delivered(t, dest)
	for rcpt, body := range want {
		if count[rcpt] != 1 || got[rcpt].sender != "s@example.test" || !bytes.Equal(got[rcpt].body, body) {
			t.Errorf("%s: stored %d times, <%s> %q", rcpt, count[rcpt], got[rcpt].sender, got[rcpt].body)
		}
	}
	if left := remaining(t, src); len(left) != 0 {
		t.Errorf("left in the queue: %v", left)
	}
}
