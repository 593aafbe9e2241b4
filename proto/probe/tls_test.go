package probe

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"qbox/proto/testkit/testtls"
)

// listenSilent accepts on 127.0.0.1:0 and holds each connection open in
// silence (as a QMQP server does) until the test ends; with cfg, inside TLS.
func listenSilent(t *testing.T, cfg *tls.Config, banner string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if banner != "" {
					c.Write([]byte(banner))
				}
				b := make([]byte, 512)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func TestPortTLS(t *testing.T) {
	ca := testtls.NewCA(t, "probe test CA")
	addr := listenSilent(t, ca.ServerConfig(t, "127.0.0.1"), "")
	p := &Prober{TLS: true, TLSRoots: ca.Pool, Wait: 200 * time.Millisecond}
	r := p.Port(context.Background(), addr, QMQP)
	if r.Verdict != OK || r.TLS == nil || !r.TLS.Speaks || !r.TLS.Verified || !strings.Contains(r.TLS.Issuer, "probe test CA") {
		t.Fatalf("a QMQPS port: %+v %+v", r, r.TLS)
	}
	// The same port judged against the system roots: shown, not verified.
	p.TLSRoots = nil
	r = p.Port(context.Background(), addr, QMQP)
	if r.Verdict != Unexpected || r.TLS == nil || !r.TLS.Speaks || r.TLS.Verified || !strings.Contains(r.Note, "NOT verified") {
		t.Fatalf("an unverified certificate: %+v %+v", r, r.TLS)
	}
	// A plain SMTP server does not speak TLS.
	plain := listenSilent(t, nil, "220 plain ESMTP\r\n")
	r = p.Port(context.Background(), plain, SMTP)
	if r.Verdict != Unexpected || r.TLS == nil || r.TLS.Speaks || !strings.Contains(r.Note, "does not speak TLS") {
		t.Fatalf("a plain port: %+v %+v", r, r.TLS)
	}
}
