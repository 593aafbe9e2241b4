package flush

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/relay"
)

// qmtpTarget reads the HOST argument of flush-maildir and maildirqmtp:
// HOST[:PORT] (QMTP, port 209), or a qmtp:// or qmtps:// URL (QMTPS: TLS
// from the first byte, s/qmail's port 6209 by default). forceTLS
// (flush-maildir --tls require) makes a bare HOST QMTPS. The TLS
// configuration verifies the server's certificate for its host name.
func qmtpTarget(arg string, forceTLS bool, opts relay.TLSOptions) (string, *tls.Config, error) {
	var r relay.Relay
	if relay.IsURL(arg) {
		var err error
		if r, err = relay.Parse(arg); err != nil {
			return "", nil, exitcode.Usage("%v", err)
		}
		if r.Protocol != relay.QMTP {
			return "", nil, exitcode.Usage("%s: want HOST[:PORT], qmtp://HOST[:PORT] or qmtps://HOST[:PORT]", arg)
		}
		if forceTLS && r.TLS == relay.TLSNone {
			return "", nil, exitcode.Usage("--tls require with %s: say qmtps://", arg)
		}
	} else {
		host, port, err := net.SplitHostPort(qmqp.WithDefaultPort(arg, ""))
		if err != nil || host == "" {
			return "", nil, exitcode.Usage("bad host %q", proto.Printable(arg, 100))
		}
		r = relay.Relay{Scheme: "qmtp", Protocol: relay.QMTP, Host: host, Port: port}
		if forceTLS {
			r.Scheme, r.TLS = "qmtps", relay.TLSImplicit
		}
		if r.Port == "" {
			r.Port = qmtp.DefaultPort
			if forceTLS {
				r.Port = relay.PortQMTPS
			}
		}
	}
	if r.TLS == relay.TLSNone {
		return r.Addr(), nil, nil
	}
	cfg, err := (&relay.Client{TLS: opts}).TLSConfig(r)
	if err != nil {
		return "", nil, exitcode.Usage("%v", err)
	}
	return r.Addr(), cfg, nil
}

// hostConnectTLS connects to addr and, with cfg, completes a TLS handshake
// with the certificate verified before any byte of mail: a failure is a
// connection that could not be made (nothing sent, nothing touched).
func hostConnectTLS(addr string, client *qmtp.Client, cfg *tls.Config) func(context.Context) (net.Conn, string, error) {
	return func(ctx context.Context) (net.Conn, string, error) {
		conn, name, err := client.Connect(ctx, []string{addr})
		if err != nil || cfg == nil {
			return conn, name, err
		}
		timeout := client.ConnectTimeout
		if timeout <= 0 {
			timeout = qmtp.ClientConnectTimeout
		}
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(hctx); err != nil {
			conn.Close()
			return nil, "", &proto.ConnectError{Protocol: "qmtps", Tried: []proto.ConnectAttempt{{Addr: addr, Err: fmt.Errorf("TLS: %v", err)}}}
		}
		return tc, name, nil
	}
}

func tlsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "tls-ca", Usage: "verify the server's TLS certificate against this PEM `FILE` instead of the system roots (QMTPS, SMTP with --tls require)"},
		&cli.StringFlag{Name: "tls-client-cert", Usage: "client certificate `FILE` (PEM) to show a QMTPS server"},
		&cli.StringFlag{Name: "tls-client-key", Usage: "key `FILE` (PEM) of --tls-client-cert"},
	}
}

func tlsOptionsOf(c *cli.Context) relay.TLSOptions {
	return relay.TLSOptions{CAFile: c.String("tls-ca"), ClientCert: c.String("tls-client-cert"), ClientKey: c.String("tls-client-key")}
}
