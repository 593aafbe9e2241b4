package qmailremote

import (
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

// Issue 20 over SMTP: replies that came before what they answer are no
// delivery: qmail-remote reports a Z for the message, no 'r' and no K,
// so qmail keeps the recipients queued.
func TestSMTPEarlyRepliesAreZ(t *testing.T) {
	r := newRun(t)
	r.control(t, "smtproutes", ":127.0.0.1:"+portOf(testpeer.EarlySMTPServer(t, 2))+"\n")
	res := r.remote(t, testMessage("x"), "anywhere.test", "sender@example.test", "a@anywhere.test", "b@anywhere.test")
	if res.letters() != "Z" || !strings.Contains(res.message, "protocol violation") {
		t.Fatalf("reports %q, want one Z naming the violation, no r and no K", res.raw)
	}
	if v := verdict(res.raw); !strings.HasPrefix(v, "Z") {
		t.Errorf("qmail-rspawn's verdict %q", v)
	}
}
