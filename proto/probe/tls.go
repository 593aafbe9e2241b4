package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"
)

// TLSInfo is what a TLS handshake with a port showed: whether it speaks
// TLS at all, the version and cipher agreed, and the certificate, with
// whether it verifies for the name asked for.
type TLSInfo struct {
	Speaks      bool      `json:"speaks"`
	Error       string    `json:"error,omitempty"` // the handshake's, when it does not
	Version     string    `json:"version,omitempty"`
	Cipher      string    `json:"cipher,omitempty"`
	Subject     string    `json:"subject,omitempty"`
	Issuer      string    `json:"issuer,omitempty"`
	Names       []string  `json:"names,omitempty"` // DNS and IP subject alternative names
	NotAfter    time.Time `json:"not_after,omitzero"`
	Verified    bool      `json:"verified"`
	VerifyError string    `json:"verify_error,omitempty"`
}

// String is one line for the table.
func (t *TLSInfo) String() string {
	if !t.Speaks {
		return "no TLS: " + t.Error
	}
	v := "verified"
	if !t.Verified {
		v = "NOT verified: " + t.VerifyError
	}
	return fmt.Sprintf("%s %s, certificate %q from %q for %s until %s, %s", t.Version, t.Cipher, t.Subject, t.Issuer,
		strings.Join(t.Names, ","), t.NotAfter.UTC().Format("2006-01-02"), v)
}

// handshake puts TLS on conn and reports it: the handshake accepts any
// certificate (so a wrong one can still be shown), which is then verified
// against roots (nil: the system's) for serverName.
func handshake(ctx context.Context, conn net.Conn, serverName string, roots *x509.CertPool, timeout time.Duration) (*tls.Conn, *TLSInfo) {
	info := &TLSInfo{}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, ServerName: serverName})
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		info.Error = err.Error()
		return nil, info
	}
	st := tc.ConnectionState()
	info.Speaks = true
	info.Version = tls.VersionName(st.Version)
	info.Cipher = tls.CipherSuiteName(st.CipherSuite)
	if len(st.PeerCertificates) == 0 {
		info.VerifyError = "no certificate"
		return tc, info
	}
	leaf := st.PeerCertificates[0]
	info.Subject, info.Issuer, info.NotAfter = leaf.Subject.String(), leaf.Issuer.String(), leaf.NotAfter
	info.Names = append(info.Names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		info.Names = append(info.Names, ip.String())
	}
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: serverName, Roots: roots, Intermediates: inter}); err != nil {
		info.VerifyError = err.Error()
	} else {
		info.Verified = true
	}
	return tc, info
}
