package serve_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/relay"
	"qbox/proto/testkit/testtls"
)

// tlsServe runs serve with QMQPS and QMTPS on 127.0.0.1:0, a certificate
// from a CA of the test's, client certificates verified against that CA,
// and --rcpthosts limiting QMTP(S) to example.test.
func tlsServe(t *testing.T) (s *server, qmqps, qmtps string, ca *testtls.CA, dir string) {
	t.Helper()
	ca = testtls.NewCA(t, "qbox serve test CA")
	dir = t.TempDir()
	caFile, certFile, keyFile := ca.Files(t, dir, "127.0.0.1")
	rcpthosts := filepath.Join(dir, "rcpthosts")
	if err := os.WriteFile(rcpthosts, []byte("example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = startServe(t, "--maildir", filepath.Join(dir, "maildir"), "--qmqps", "127.0.0.1:0", "--qmtps", "127.0.0.1:0",
		"--tls-cert", certFile, "--tls-key", keyFile, "--tls-client-ca", caFile, "--rcpthosts", rcpthosts)
	return s, listeningAddr(t, s, "qmqps"), listeningAddr(t, s, "qmtps"), ca, dir
}

func sendRelay(t *testing.T, c *relay.Client, rcpts ...string) relay.Outcome {
	t.Helper()
	msg := []byte("Subject: tls\n\nover TLS\n")
	o, err := c.SendEach(context.Background(), proto.Envelope{Sender: "me@example.test", Recipients: rcpts}, int64(len(msg)),
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func parseRelay(t *testing.T, s string) relay.Relay {
	t.Helper()
	r, err := relay.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// QMQP and QMTP inside TLS from the first byte: the relay client's
// qmqps:// and qmtps:// reach serve --qmqps and --qmtps, with the
// certificate verified against the test's CA.
func TestServeQMQPSAndQMTPS(t *testing.T) {
	_, qmqps, qmtps, ca, _ := tlsServe(t)
	for _, u := range []string{"qmqps://" + qmqps, "qmtps://" + qmtps} {
		c := &relay.Client{Relays: []relay.Relay{parseRelay(t, u)}, TLS: relay.TLSOptions{Roots: ca.Pool}, Timeout: 30 * time.Second}
		o := sendRelay(t, c, "you@example.test")
		if o.Replies[0].Status != proto.OK {
			t.Errorf("%s: %v", u, o.Replies)
		}
	}
	// Without the CA the certificate is not trusted: nothing is sent.
	c := &relay.Client{Relays: []relay.Relay{parseRelay(t, "qmqps://"+qmqps)}}
	msg := []byte("x\n")
	_, err := c.SendEach(context.Background(), proto.Envelope{Sender: "", Recipients: []string{"you@example.test"}}, int64(len(msg)),
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil })
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an unverified server certificate: %v", err)
	}
	// A plain QMQP client at the QMQPS port gets no K.
	if r, err := sendQMQP(t, qmqps, proto.Envelope{Sender: "", Recipients: []string{"you@example.test"}}, msg); err == nil && r.Status == proto.OK {
		t.Fatalf("plain QMQP into the QMQPS port got %v", r)
	}
}

// A QMTPS client with a certificate the --tls-client-ca verifies may
// relay past --rcpthosts; one without may not.
func TestServeQMTPSClientCertificateRelays(t *testing.T) {
	_, _, qmtps, ca, dir := tlsServe(t)
	r := parseRelay(t, "qmtps://"+qmtps)
	c := &relay.Client{Relays: []relay.Relay{r}, TLS: relay.TLSOptions{Roots: ca.Pool}, Timeout: 30 * time.Second}
	o := sendRelay(t, c, "you@example.test", "them@elsewhere.example")
	if o.Replies[0].Status != proto.OK || o.Replies[1].Status != proto.Permanent {
		t.Fatalf("without a client certificate: %v", o.Replies)
	}
	certFile, keyFile := testtls.WritePair(t, dir, "client", ca.Issue(t, true, "client.example"))
	c.TLS.ClientCert, c.TLS.ClientKey = certFile, keyFile
	o = sendRelay(t, c, "you@example.test", "them@elsewhere.example")
	if o.Replies[0].Status != proto.OK || o.Replies[1].Status != proto.OK {
		t.Fatalf("with a verified client certificate: %v", o.Replies)
	}
	// A certificate from another CA does not count.
	other := testtls.NewCA(t, "another CA")
	certFile, keyFile = testtls.WritePair(t, dir, "stranger", other.Issue(t, true, "stranger.example"))
	c.TLS.ClientCert, c.TLS.ClientKey = certFile, keyFile
	o = sendRelay(t, c, "them@elsewhere.example")
	if o.Replies[0].Status == proto.OK {
		t.Fatalf("a certificate from another CA relayed: %v", o.Replies)
	}
}
