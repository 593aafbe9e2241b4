package qmailremote

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
	"qbox/proto/testkit/testtls"
)

// A qmtproutes entry whose port has an "s" before it (s/qmail's way of
// asking for implicit TLS) sends the domain over QMTPS: TLS from the first
// byte, the relay's certificate verified against the system roots (here
// the test's CA through $SSL_CERT_FILE). A certificate no root vouches for
// gets a Z and nothing is sent.
func TestQMTPSRouteToServe(t *testing.T) {
	ca := testtls.NewCA(t, "qbox test CA")
	dir := t.TempDir()
	caFile, certFile, keyFile := ca.Files(t, dir, "127.0.0.1")
	dest := filepath.Join(dir, "dest")
	srv := testpeer.StartServe(t, "--qmqp", "", "--qmtp", "", "--qmtps", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile, "--maildir", dest)
	msg := testMessage(testpeer.Token(t))

	r := newRun(t, "SSL_CERT_FILE="+caFile)
	r.control(t, "qmtproutes", "tls.test:127.0.0.1:s"+portOf(srv.QMTPS)+"\n")
	res := r.remote(t, msg, "tls.test", "sender@example.test", "a@tls.test")
	if res.letters() != "rK" || !strings.Contains(res.message, "over QMTP") {
		t.Fatalf("reports %q, want r K over QMTPS", res.raw)
	}
	if got := stored(t, dest); len(got) != 1 || !bytes.HasSuffix(got[0], msg) {
		t.Fatalf("serve stored %d files, want 1", len(got))
	}

	// Without the CA among the roots: a Z naming the certificate.
	other := testtls.NewCA(t, "another CA")
	otherFile := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(otherFile, other.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	r2 := newRun(t, "SSL_CERT_FILE="+otherFile)
	r2.control(t, "qmtproutes", "tls.test:127.0.0.1:s"+portOf(srv.QMTPS)+"\n")
	res = r2.remote(t, msg, "tls.test", "sender@example.test", "a@tls.test")
	if v := verdict(res.raw); !strings.HasPrefix(v, "Z") || !strings.Contains(string(res.raw), "certificate") {
		t.Fatalf("an unverified QMTPS relay: %q", res.raw)
	}
	if got := stored(t, dest); len(got) != 1 {
		t.Fatalf("serve stored %d files after the refused session, want still 1", len(got))
	}
}
