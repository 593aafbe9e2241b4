package smtp_test

// STARTTLS with plain text behind it (RFC 3207 4.2; the CVE-2011-0411
// class): what a client pipelines after STARTTLS is discarded, and a
// handshake that fails ends the session; no injected command is acted on.

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"qbox/proto/smtp"
	"qbox/proto/testkit/servetest"
	"qbox/proto/testkit/testtls"
)

// serverCert is a self-signed certificate for 127.0.0.1.
func serverCert(t *testing.T) tls.Certificate { return testtls.New(t).TLS }

const injected = "MAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n" +
	"Subject: injected\r\n\r\nplain text behind STARTTLS\r\n.\r\n"

// replyReader reads SMTP replies, multi-line ones whole.
type replyReader struct {
	t  *testing.T
	br *bufio.Reader
}

func (r replyReader) reply() (string, error) {
	var all string
	for {
		line, err := r.br.ReadString('\n')
		all += line
		if err != nil {
			return all, err
		}
		if len(line) < 4 || line[3] != '-' {
			return all, nil
		}
	}
}

func (r replyReader) want(prefix string) {
	r.t.Helper()
	got, err := r.reply()
	if err != nil || !strings.HasPrefix(got, prefix) {
		r.t.Fatalf("reply %q (%v), want %s", got, err, prefix)
	}
}

func startTLSServer(t *testing.T) (string, *envelopeBackend) {
	b := &envelopeBackend{}
	addr, _ := servetest.Start(t, &smtp.Server{Backend: b, Hostname: "mx.test",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{serverCert(t)}}})
	return addr, b
}

func dialPlain(t *testing.T, addr string) (net.Conn, replyReader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute)) // a guard: a hang fails
	r := replyReader{t: t, br: bufio.NewReader(c)}
	r.want("220 ")
	if _, err := io.WriteString(c, "EHLO client.test\r\n"); err != nil {
		t.Fatal(err)
	}
	r.want("250")
	return c, r
}

// A whole transaction pipelined in the same packet as STARTTLS is thrown
// away: the handshake that follows succeeds, no reply to the injected
// commands ever comes, inside TLS or out, and nothing is stored.
func TestSTARTTLSDiscardsPipelinedPlaintext(t *testing.T) {
	addr, b := startTLSServer(t)
	c, r := dialPlain(t, addr)
	if _, err := io.WriteString(c, "STARTTLS\r\n"+injected); err != nil {
		t.Fatal(err)
	}
	r.want("220 ")
	if n := r.br.Buffered(); n > 0 {
		t.Fatalf("%d bytes after the 220 to STARTTLS", n)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake after the discarded plain text: %v", err)
	}
	tr := replyReader{t: t, br: bufio.NewReader(tc)}
	io.WriteString(tc, "EHLO client.test\r\n")
	tr.want("250")
	// The next reply inside TLS is NOOP's: none is left over for the
	// injected commands.
	io.WriteString(tc, "NOOP\r\n")
	tr.want("250 ")
	io.WriteString(tc, "QUIT\r\n")
	tr.want("221 ")
	if n := b.count(); n != 0 {
		t.Fatalf("%d message(s) stored; the injected transaction must not be", n)
	}
}

// Plain text where the TLS handshake should be fails the handshake, and
// the session ends there (as Postfix's "lost connection after STARTTLS"):
// no 550 and no plain-text session after it, nothing stored.
func TestSTARTTLSFailedHandshakeEndsSession(t *testing.T) {
	addr, b := startTLSServer(t)
	c, r := dialPlain(t, addr)
	// In the same packet as STARTTLS (discarded), and again once the 220
	// is in: the second copy is what the handshake reads.
	if _, err := io.WriteString(c, "STARTTLS\r\n"+injected); err != nil {
		t.Fatal(err)
	}
	r.want("220 ")
	io.WriteString(c, injected+"QUIT\r\n")
	rest, err := io.ReadAll(r.br)
	if err != nil && !isReset(err) {
		t.Fatalf("after the failed handshake: %v (read %q); want the connection closed", err, rest)
	}
	for _, code := range []string{"250", "354", "550", "221"} {
		if strings.Contains(string(rest), "\n"+code) || strings.HasPrefix(string(rest), code) {
			t.Fatalf("after the failed handshake the server said %q; want the session ended", rest)
		}
	}
	if n := b.count(); n != 0 {
		t.Fatalf("%d message(s) stored; the injected transaction must not be", n)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

func (b *envelopeBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.envs)
}
