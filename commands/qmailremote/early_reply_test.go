package qmailremote

import (
	"bytes"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

// Issue 20 end to end: a QMTP server that says K for every recipient the
// moment qmail-remote connects, before reading a byte, then reads the
// message and closes without a reply, has received nothing: no
// recipient is reported delivered ('r') and the message report is a Z,
// so qmail-send keeps the mail queued. The message is larger than the
// socket buffers (testpeer.EarlyKServer), so the K's are on qmail-remote's
// side before its final byte goes out whatever the scheduling; the small
// package at every byte offset is proto/qmtp's
// TestClientEarlyReplyOffsetWalk.
func TestQMTPEarlyKIsNoDelivery(t *testing.T) {
	msg := append(testMessage(testpeer.Token(t)), bytes.Repeat([]byte("x\n"), testpeer.EarlyKMessage/2)...)
	addr, sessions := testpeer.EarlyKServer(t, []byte("6:Kearly,6:Kearly,6:Kearly,"))
	r := newRun(t)
	r.control(t, "qmtproutes", "early.test:127.0.0.1:"+portOf(addr)+"\n")
	res := r.remote(t, msg, "early.test", "sender@example.test", "a@early.test", "b@early.test", "c@early.test")
	if strings.ContainsAny(res.letters(), "rK") || !strings.HasPrefix(res.message, "Z") || strings.Contains(string(res.raw), "Kearly") {
		t.Fatalf("reports %q: want no r, no K, a Z message report", res.raw)
	}
	// qmail-rspawn's one-recipient run: Z.
	one := r.remote(t, msg, "early.test", "sender@example.test", "a@early.test")
	if v := verdict(one.raw); !strings.HasPrefix(v, "Z") {
		t.Errorf("qmail-rspawn's verdict %q, want Z", v)
	}
	if n := sessions.Load(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}
}
