package smtp

import (
	"bufio"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"testing"

	"qbox/proto"
)

// Bytes the server sends behind its 220 to STARTTLS, in a write of their
// own, are never read as a reply inside TLS: the client finds them on its
// socket before the handshake, or the handshake reads them and fails.
// Either way the session ends with a Z and no MAIL is sent, in TLS or
// out.
func TestSTARTTLSInjectionSeparateWrite(t *testing.T) {
	cert, _ := selfSigned(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	for _, inject := range []string{"250 injected\r\n", "250-a\r\n250 STARTTLS\r\n", "\x16\x03\x01"} {
		var mu sync.Mutex
		var seen []string
		addr := startServer(t, func(p *peer) {
			p.send("220 hi\r\n")
			p.line()
			p.send("250-hi\r\n250 STARTTLS\r\n")
			if l, _ := p.line(); l != "STARTTLS" {
				return
			}
			p.send("220 go ahead\r\n")
			p.send(inject)
			tc := tls.Server(p.c, cfg)
			if tc.Handshake() != nil {
				return
			}
			p.c = tc
			for {
				l, err := (&peer{c: tc, br: bufio.NewReader(tc)}).line()
				if err != nil {
					return
				}
				mu.Lock()
				seen = append(seen, l)
				mu.Unlock()
				p.send("250 ok\r\n")
			}
		})
		results, err := deliver(t, &Client{}, addr, []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@example.test")})
		if err == nil || statuses(results) != "Z" || results[0].FromServer {
			t.Fatalf("inject %q: err %v, results %+v; want the session ended, Z", inject, err, results)
		}
		if !errors.Is(err, proto.ErrRemoteViolation) && !strings.Contains(err.Error(), "TLS handshake") {
			t.Errorf("inject %q: err %v, want a violation or a failed handshake", inject, err)
		}
		mu.Lock()
		for _, l := range seen {
			if strings.HasPrefix(l, "MAIL") {
				t.Errorf("inject %q: MAIL sent inside TLS after an injection", inject)
			}
		}
		mu.Unlock()
	}
}

// The EHLO reply (go-smtp's part of the session) counts only for an EHLO
// written: a server that sends it with its greeting, before the EHLO,
// gets no session. (Sent in a write of its own, it may reach the socket
// before the EHLO is handed over, then it is early, or after, then it
// counts: the offset walk decides such cases with events.)
func TestEarlyEHLOReply(t *testing.T) {
	addr := startServer(t, func(p *peer) {
		p.send("220 hi\r\n250-hi\r\n250 PIPELINING\r\n")
		p.line()
		p.send("250 ok\r\n")
		p.line()
	})
	results, err := deliver(t, &Client{TLS: TLSNone}, addr, []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@example.test")})
	if !errors.Is(err, proto.ErrRemoteViolation) || statuses(results) != "Z" || results[0].FromServer {
		t.Fatalf("err %v, results %+v; want a violation and Z", err, results)
	}
}
