//go:build peers

package serve_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/relay"
	"qbox/proto/testkit/testpeer"
	"qbox/proto/testkit/testtls"
)

// countNew is how many files the maildir's new/ holds.
func countNew(t *testing.T, maildir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(maildir, "new"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(ents)
}

// Postfix's qmqp-source, a real plaintext QMQP client, through socat's
// TLS client (OPENSSL, verifying serve's certificate against the test's
// CA) into serve --qmqps: every message is answered K and stored.
func TestQmqpSourceThroughTLSIntoServeQMQPS(t *testing.T) {
	source := testpeer.Require(t, "qmqp-source", "postfix")
	_, qmqps, _, _, dir := tlsServe(t)
	wrapper := testpeer.Socat(t, "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr,fork",
		"OPENSSL:"+qmqps+",cafile="+filepath.Join(dir, "ca.pem")+",verify=1,commonname=127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, source, "-m", "5", "-s", "1", "-M", "example.test", "-f", "me@example.test", "-t", "you@example.test", "inet:"+wrapper)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("qmqp-source through the TLS wrapper: %v\n%s", err, stderr.Bytes())
	}
	// qmqp-source took a K for each: each is on disk.
	if n := countNew(t, filepath.Join(dir, "maildir")); n != 5 {
		t.Fatalf("%d messages stored, want 5", n)
	}
}

// qbox's QMQPS client (inject -s qmqps://) into Postfix's qmqpd behind
// socat's OPENSSL-LISTEN with a certificate from the test's CA: the
// message arrives; without the CA nothing is sent.
func TestInjectQMQPSIntoPostfixBehindTLS(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	ca := testtls.NewCA(t, "qbox test CA")
	dir := t.TempDir()
	caFile, certFile, keyFile := ca.Files(t, dir, "127.0.0.1")
	wrapper := testpeer.Socat(t, "OPENSSL-LISTEN:0,bind=127.0.0.1,reuseaddr,fork,verify=0,cert="+certFile+",key="+keyFile,
		"TCP:"+pf.QMQPAddr)
	token := testpeer.Token(t)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(testpeer.Binary(t), append([]string{"inject"}, args...)...)
		cmd.Env = append(os.Environ(), "QMAILHOME="+dir, "QMAILDEFAULTHOST=example.test")
		cmd.Stdin = strings.NewReader("Subject: " + token + "\n\nover QMQPS\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("-s", "qmqps://"+wrapper, "-f", "me@example.test", "you@"+pf.Domain); err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("inject trusted a certificate of an unknown CA: %v\n%s", err, out)
	}
	if out, err := run("-s", "qmqps://"+wrapper+"?ca="+caFile, "-f", "me@example.test", "you@"+pf.Domain); err != nil {
		t.Fatalf("inject -s qmqps://: %v\n%s", err, out)
	}
	pf.WaitFor(t, token, 1, time.Minute)
}

// qbox's QMTPS client (the relay list's qmtps://) into mailfront's
// qmtpfront-echo behind socat's OPENSSL-LISTEN: a real QMTP server behind a
// TLS wrapper answers K.
func TestQMTPSIntoMailfrontBehindTLS(t *testing.T) {
	front := testpeer.Mailfront(t, "qmtp")
	ca := testtls.NewCA(t, "qbox test CA")
	dir := t.TempDir()
	_, certFile, keyFile := ca.Files(t, dir, "127.0.0.1")
	wrapper := testpeer.Socat(t, "OPENSSL-LISTEN:0,bind=127.0.0.1,reuseaddr,fork,verify=0,cert="+certFile+",key="+keyFile, "TCP:"+front)
	r, err := relay.Parse("qmtps://" + wrapper)
	if err != nil {
		t.Fatal(err)
	}
	c := &relay.Client{Relays: []relay.Relay{r}, TLS: relay.TLSOptions{Roots: ca.Pool}, Timeout: time.Minute}
	reply, err := c.Send(context.Background(), proto.Envelope{Sender: "me@example.test", Recipients: []string{"you@example.test"}},
		strings.NewReader("Subject: qmtps\n\nx\n"), int64(len("Subject: qmtps\n\nx\n")))
	if err != nil || reply.Status != proto.OK {
		t.Fatalf("QMTPS into mailfront: %v %v", reply, err)
	}
}
