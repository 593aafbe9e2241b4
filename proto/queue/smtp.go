package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"

	"qbox/proto"
	"qbox/proto/mxps"
	"qbox/proto/qmtp"
	"qbox/proto/smtp"
)

// SMTP is the SMTP transport (proto/smtp): every package over one
// session, pipelined when the server offers it.
type SMTP struct {
	Client smtp.Client
	Addrs  []string // host:port, tried in order until one connects
}

// Deliver runs one SMTP session with the first of Addrs that connects.
func (t *SMTP) Deliver(ctx context.Context, pkgs []proto.Message, onResult func(proto.Result)) (Stats, error) {
	conn, addr, err := t.Client.Connect(ctx, t.Addrs)
	if err != nil {
		return Stats{}, &UnreachableError{Err: err}
	}
	defer conn.Close()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return smtpSession(ctx, &t.Client, conn, host, addr, pkgs, onResult)
}

// smtpSession sends pkgs over conn to the SMTP server host (the name a
// required TLS certificate must carry), named server in the results.
func smtpSession(ctx context.Context, c *smtp.Client, conn net.Conn, host, server string, pkgs []proto.Message, onResult func(proto.Result)) (Stats, error) {
	st, err := c.Send(ctx, conn, host, pkgs, func(r proto.Result) {
		r.Server, r.Protocol = server, "SMTP"
		onResult(r)
	})
	return Stats{Sessions: 1, BytesOut: st.BytesOut, Replies: st.Replies}, err
}

// MXPS delivers to a domain's exchangers under MXPS's rule
// (cr.yp.to/proto/mxps.txt): the attempts in RFC 5321 order
// (mxps.AllAttempts); for a QMTP exchanger QMTP first and, only when
// that connection attempt fails, SMTP at the same address; SMTP
// exchangers over SMTP. The first attempt that connects carries the
// session, and every later session of the run goes to that same server
// over that same protocol: mail whose reply was lost in a QMTP session is
// never offered over SMTP, or to another exchanger, in the same run.
type MXPS struct {
	Attempts []mxps.Attempt
	Dialer   mxps.Dialer
	QMTP     qmtp.Client
	// SMTP is the client for SMTP attempts; nil skips them (a QMTP-only
	// run).
	SMTP *smtp.Client
	// TLSConfig is the base configuration of attempts in TLS (QMTPS
	// routes); nil: TLS 1.2 or newer, the system roots.
	TLSConfig *tls.Config

	pinned *mxps.Attempt
}

// Deliver walks the attempts and runs one session on the first that
// connects.
func (t *MXPS) Deliver(ctx context.Context, pkgs []proto.Message, onResult func(proto.Result)) (Stats, error) {
	attempts := t.Attempts
	if t.pinned != nil {
		attempts = []mxps.Attempt{*t.pinned}
	} else if t.SMTP == nil {
		attempts = nil
		for _, a := range t.Attempts {
			if a.Protocol == mxps.ProtoQMTP {
				attempts = append(attempts, a)
			}
		}
	}
	var st Stats
	var sessErr error
	_, err := t.Dialer.Deliver(ctx, attempts, func(conn net.Conn, a mxps.Attempt) error {
		defer conn.Close()
		pinned := a
		t.pinned = &pinned
		server := a.Host + " " + a.Addr
		if a.TLS {
			tc, err := t.handshake(ctx, conn, a)
			if err != nil {
				// No plaintext fallback: every recipient gets a Z saying why.
				for i, p := range pkgs {
					for j := range p.Recipients {
						onResult(proto.Result{Message: i, Recipient: j, Reply: proto.Z(err.Error()), Server: server, Protocol: "QMTP"})
					}
				}
				sessErr = err
				return err
			}
			conn = tc
		}
		if a.Protocol == mxps.ProtoQMTP {
			st, sessErr = qmtpSession(ctx, &t.QMTP, conn, server, pkgs, onResult)
		} else {
			st, sessErr = smtpSession(ctx, t.SMTP, conn, a.Host, server, pkgs, onResult)
		}
		return sessErr
	})
	var ce *proto.ConnectError
	if errors.As(err, &ce) {
		return st, &UnreachableError{Err: err}
	}
	return st, sessErr
}

// handshake puts TLS on a QMTPS attempt's connection, the certificate
// verified for the route's relay name.
func (t *MXPS) handshake(ctx context.Context, conn net.Conn, a mxps.Attempt) (net.Conn, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.TLSConfig != nil {
		cfg = t.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = strings.TrimSuffix(strings.TrimPrefix(a.Host, "["), "]")
	}
	hctx, cancel := context.WithTimeout(ctx, t.QMTP.ConnectTimeout+qmtp.ClientConnectTimeout)
	defer cancel()
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("qmtps: TLS with %s (%s): %v", a.Host, a.Addr, err)
	}
	return tc, nil
}
