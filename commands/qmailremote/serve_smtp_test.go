package qmailremote

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/testpeer"
)

// A host that runs only `qbox serve --smtp` (its QMTP port closed) and
// publishes an MXPS record gets the message through its SMTP port: every
// recipient 'r', 'h' for one outside its --rcpthosts, K with serve's 250,
// and serve stores exactly the bytes given (dots and 8-bit included).
func TestMXPSToServeSMTP(t *testing.T) {
	rcpthosts := filepath.Join(t.TempDir(), "rcpthosts")
	if err := os.WriteFile(rcpthosts, []byte("qmtp.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "dest")
	smtpAddr := testpeer.StartServe(t, "--qmqp", "", "--qmtp", "", "--smtp", "127.0.0.1:0",
		"--rcpthosts", rcpthosts, "--maildir", dest).SMTP
	zone := dnstest.Start(t, dnstest.Zone{Records: []string{
		"qmtp.test. 300 IN MX 12801 mx.qmtp.test.",
		"mx.qmtp.test. 300 IN A 127.0.0.1",
	}})
	r := newRun(t, EnvResolver+"="+zone.Addr, EnvQMTPPort+"="+closedPort(t), EnvSMTPPort+"="+portOf(smtpAddr))
	msg := testMessage(testpeer.Token(t))
	res := r.remote(t, msg, "qmtp.test", "sender@example.test", "a@qmtp.test", "x@elsewhere.test", "b@qmtp.test")
	if res.letters() != "rhrK" || !strings.HasPrefix(res.message, "K127.0.0.1 accepted message.\nRemote host said: 250 2.0.0 ok ") {
		t.Fatalf("reports %q, want r h r K over SMTP", res.raw)
	}
	if !strings.Contains(res.recipients[1], "553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts") {
		t.Errorf("refused recipient's report %q", res.recipients[1])
	}
	got := stored(t, dest)
	if len(got) != 2 {
		t.Fatalf("serve stored %d files, want 2", len(got))
	}
	for _, m := range got {
		if !bytes.HasSuffix(m, msg) || !bytes.Contains(m, []byte(" with SMTP; ")) {
			t.Errorf("stored %q, want it to end with the message as given", m)
		}
	}
}

// The usage error and hostile addresses (TestInterfaceAndHostileAddresses
// against Postfix on port 25, in rspawn_peers_test.go) against qbox serve
// --smtp on 127.0.0.1:0: a sender with CR LF is refused whole, a recipient
// with one gets 'h' while the others are delivered, byte for byte.
func TestHostileAddressesToServe(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "dest")
	smtpAddr := testpeer.StartServe(t, "--qmqp", "", "--qmtp", "", "--smtp", "127.0.0.1:0", "--maildir", dest).SMTP
	r := newRun(t, EnvQMTPPort+"="+closedPort(t), EnvSMTPPort+"="+portOf(smtpAddr))
	res := r.remote(t, testMessage("x"), "[127.0.0.1]", "sender@example.test")
	if res.raw == nil || string(res.raw) != "DI (qmail-remote) was invoked improperly. (#5.3.5)\n\x00" {
		t.Errorf("usage: %q", res.raw)
	}
	res = r.remote(t, testMessage("x"), "[127.0.0.1]", "evil\r\nRCPT TO:<x@example.test>", "a@example.test")
	if res.letters() != "D" || !strings.Contains(res.message, "CR, LF or NUL") {
		t.Errorf("hostile sender: %q", res.raw)
	}
	if got := stored(t, dest); len(got) != 0 {
		t.Fatalf("serve stored %d files from a hostile sender", len(got))
	}
	msg := testMessage(testpeer.Token(t))
	res = r.remoteFrom(t, msg, 3, "[127.0.0.1]", "sender@example.test", "one@example.test", "x@example.test>\r\nDATA", "two@example.test")
	if res.letters() != "rhrK" || !strings.HasPrefix(res.recipients[1], "hRecipient address is empty or contains CR, LF or NUL") {
		t.Fatalf("hostile recipient: %q", res.raw)
	}
	got := stored(t, dest)
	if len(got) != 2 {
		t.Fatalf("serve stored %d files, want 2", len(got))
	}
	for _, m := range got {
		if !bytes.HasSuffix(m, msg) {
			t.Errorf("stored %q, want it to end with the message as given", m)
		}
	}
}
