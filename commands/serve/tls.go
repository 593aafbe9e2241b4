package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"qbox/proto/server"
)

// Protocol names of the TLS listeners: QMQP and QMTP inside TLS from the
// first byte (s/qmail's QMTPS; QMQPS is qbox's own). They are served by
// the same QMQP and QMTP servers, with the same access lists: TLS is put
// on at the listener.
const (
	QMQPS = "qmqps"
	QMTPS = "qmtps"
)

// maxPEM bounds a certificate or CA file read for the server.
const maxPEM = 4 << 20

// LoadServerTLS is the TLS configuration of the QMQPS and QMTPS
// listeners: the certificate chain and key (PEM), TLS 1.2 or newer, and,
// with clientCA, client certificates asked for and verified against it
// (a client without one is still served, but relays only as its address
// allows). Nil when no certificate is given.
func LoadServerTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		if clientCA != "" {
			return nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("give both --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		b, err := readBounded(clientCA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", clientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

func readBounded(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxPEM {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPEM)
	}
	return os.ReadFile(path)
}

// ListenTLS opens the QMQPS and QMTPS listeners (an empty address is
// none): TCP listeners wrapped in TLS, which speak QMQP and QMTP.
func ListenTLS(qmqpsAddr, qmtpsAddr string, cfg *tls.Config) ([]Listener, error) {
	var ls []Listener
	for _, a := range []struct{ proto, addr string }{{QMQP, qmqpsAddr}, {QMTP, qmtpsAddr}} {
		if a.addr == "" {
			continue
		}
		if cfg == nil {
			for _, o := range ls {
				o.Close()
			}
			return nil, fmt.Errorf("%ss needs --tls-cert and --tls-key", a.proto)
		}
		l, err := listenConfig.Listen(context.Background(), "tcp", a.addr)
		if err != nil {
			for _, o := range ls {
				o.Close()
			}
			return nil, fmt.Errorf("%ss: %w", a.proto, err)
		}
		ls = append(ls, Listener{Protocol: a.proto, Listener: tls.NewListener(l, cfg), TLS: true})
	}
	return ls, nil
}

// relayByCertificate reports whether a QMTP session's client showed a
// certificate verified against --tls-client-ca: it may then relay past
// --rcpthosts, as s/qmail's qmail-qmtpd lets it.
func relayByCertificate(conn server.Conn) bool {
	for {
		switch c := conn.(type) {
		case *tls.Conn:
			return len(c.ConnectionState().VerifiedChains) > 0
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
			continue
		}
		return false
	}
}
