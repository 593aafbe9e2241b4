package testtls

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// Cert is a server certificate for localhost, 127.0.0.1 and the names
// given, signed by a CA of its own, with a pool that trusts it: for a
// test that needs TLS but no CA of its choosing.
type Cert struct {
	TLS  tls.Certificate // for tls.Config.Certificates
	Pool *x509.CertPool  // trusting it, for a client's RootCAs
	pair Pair
}

// New makes a fresh Cert, valid from an hour ago for a day.
func New(t testing.TB, names ...string) Cert {
	t.Helper()
	ca := NewCA(t, "qbox test CA")
	p := ca.Issue(t, false, append([]string{"localhost", "127.0.0.1"}, names...)...)
	return Cert{TLS: p.TLS, Pool: ca.Pool, pair: p}
}

// Server is a server configuration with the certificate.
func (c Cert) Server() *tls.Config { return &tls.Config{Certificates: []tls.Certificate{c.TLS}} }

// Client is a client configuration that trusts the certificate and
// expects serverName.
func (c Cert) Client(serverName string) *tls.Config {
	return &tls.Config{RootCAs: c.Pool, ServerName: serverName}
}

// Files writes the certificate and its key as PEM files (mode 0600) in a
// directory of the test's own and returns their paths.
func (c Cert) Files(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	return WritePair(t, t.TempDir(), "cert", c.pair)
}
