// Package relay is the one failover list of relays that sendmail,
// qmail-inject, qbox inject and the queue runners send through: each relay
// a URL naming its protocol (QMQP, QMTP or SMTP submission), whether TLS
// wraps it, and for SMTP the user that authenticates. A bare host[:port]
// is QMQP, as $QMQPSERVERS and control/qmqpservers always meant.
//
//	qmqp://host[:628]        qmqps://host[:6628]   (QMQP inside TLS)
//	qmtp://host[:209]        qmtps://host[:6209]   (QMTP inside TLS, s/qmail's port)
//	smtp://[user@]host[:587] submission, STARTTLS required (?tls=none: plain)
//	smtps://[user@]host[:465] submission inside TLS from the first byte
//
// Options after '?': tls=none (smtp:// only: no STARTTLS, no AUTH),
// ca=FILE (a PEM bundle to verify the server's certificate against, instead
// of the system roots). A password never goes in the URL: it comes from a
// netrc file (netrc.go).
package relay

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// MaxURL bounds one relay entry; a longer one is refused unparsed.
const MaxURL = 2048

// Default ports. QMTPS is s/qmail's (qmail-remote's QMTPS and its
// qmail-qmtpd behind sslserver); QMQPS has no port of its own anywhere,
// so qbox takes 6628 by the same rule (a 6 before the plain port).
const (
	PortQMQP  = "628"
	PortQMQPS = "6628"
	PortQMTP  = "209"
	PortQMTPS = "6209"
	PortSMTP  = "587"
	PortSMTPS = "465"
)

// Protocol is what a relay speaks inside its connection.
type Protocol string

const (
	QMQP Protocol = "QMQP"
	QMTP Protocol = "QMTP"
	SMTP Protocol = "SMTP"
)

// TLSMode is how TLS wraps a relay's connection.
type TLSMode int

const (
	TLSNone     TLSMode = iota // plain text
	TLSImplicit                // TLS from the first byte (qmqps, qmtps, smtps)
	TLSStart                   // SMTP STARTTLS, required
)

// Relay is one parsed relay entry.
type Relay struct {
	Scheme   string // qmqp, qmqps, qmtp, qmtps, smtp, smtps
	Protocol Protocol
	TLS      TLSMode
	Host     string // without brackets
	Port     string
	User     string // SMTP AUTH user; "" for none
	CAFile   string // ?ca=: verify against this bundle instead of the system roots
}

// Addr is host:port to dial.
func (r Relay) Addr() string { return net.JoinHostPort(r.Host, r.Port) }

// String is the relay as a URL (it never holds a secret).
func (r Relay) String() string {
	u := r.Scheme + "://"
	if r.User != "" {
		u += url.PathEscape(r.User) + "@"
	}
	u += r.Addr()
	var opts []string
	if r.Protocol == SMTP && r.TLS == TLSNone {
		opts = append(opts, "tls=none")
	}
	if r.CAFile != "" {
		opts = append(opts, "ca="+url.QueryEscape(r.CAFile))
	}
	if len(opts) > 0 {
		u += "?" + strings.Join(opts, "&")
	}
	return u
}

var schemes = map[string]struct {
	proto Protocol
	tls   TLSMode
	port  string
}{
	"qmqp":  {QMQP, TLSNone, PortQMQP},
	"qmqps": {QMQP, TLSImplicit, PortQMQPS},
	"qmtp":  {QMTP, TLSNone, PortQMTP},
	"qmtps": {QMTP, TLSImplicit, PortQMTPS},
	"smtp":  {SMTP, TLSStart, PortSMTP},
	"smtps": {SMTP, TLSImplicit, PortSMTPS},
}

// IsURL reports whether s is written as a URL (has "scheme://"), as
// opposed to a bare QMQP server.
func IsURL(s string) bool { return strings.Contains(s, "://") }

// Parse reads one relay entry: a URL as in the package comment, or a bare
// host, host:port or [v6]:port, which is QMQP.
func Parse(s string) (Relay, error) {
	if len(s) > MaxURL {
		return Relay{}, fmt.Errorf("relay entry longer than %d bytes", MaxURL)
	}
	if strings.ContainsAny(s, "\x00\r\n\t ") || s == "" {
		return Relay{}, fmt.Errorf("bad relay %q: empty, or white space or control bytes in it", printable(s))
	}
	if !IsURL(s) {
		host, port, err := splitHostPort(s, PortQMQP)
		if err != nil {
			return Relay{}, fmt.Errorf("bad relay %q: %v", printable(s), err)
		}
		return Relay{Scheme: "qmqp", Protocol: QMQP, Host: host, Port: port}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return Relay{}, fmt.Errorf("bad relay %q: %v", printable(s), err)
	}
	scheme := strings.ToLower(u.Scheme)
	sc, ok := schemes[scheme]
	if !ok {
		return Relay{}, fmt.Errorf("bad relay %q: unknown scheme %q (want qmqp, qmqps, qmtp, qmtps, smtp or smtps)", printable(s), printable(u.Scheme))
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.Fragment != "" {
		return Relay{}, fmt.Errorf("bad relay %q: want %s://host[:port] with nothing after it but ?options", printable(s), scheme)
	}
	r := Relay{Scheme: scheme, Protocol: sc.proto, TLS: sc.tls}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return Relay{}, fmt.Errorf("bad relay %q: a password does not go in the URL; put it in the netrc file", redact(u))
		}
		if sc.proto != SMTP {
			return Relay{}, fmt.Errorf("bad relay %q: only smtp:// and smtps:// take a user", printable(s))
		}
		r.User = u.User.Username()
		if r.User == "" || strings.ContainsAny(r.User, "\x00\r\n") || len(r.User) > 255 {
			return Relay{}, fmt.Errorf("bad relay %q: bad user name", printable(s))
		}
	}
	if r.Host, r.Port, err = splitHostPort(u.Host, sc.port); err != nil {
		return Relay{}, fmt.Errorf("bad relay %q: %v", printable(s), err)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Relay{}, fmt.Errorf("bad relay %q: options: %v", printable(s), err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return Relay{}, fmt.Errorf("bad relay %q: option %s given %d times", printable(s), printable(k), len(v))
		}
		switch k {
		case "tls":
			switch {
			case v[0] == "none" && scheme == "smtp":
				r.TLS = TLSNone
			case v[0] == "none":
				return Relay{}, fmt.Errorf("bad relay %q: tls=none is for smtp:// only (use %s:// for plain text)", printable(s), strings.TrimSuffix(scheme, "s"))
			default:
				return Relay{}, fmt.Errorf("bad relay %q: tls=%s: the only value is none", printable(s), printable(v[0]))
			}
		case "ca":
			if v[0] == "" || strings.ContainsAny(v[0], "\x00\r\n") {
				return Relay{}, fmt.Errorf("bad relay %q: ca= wants a file name", printable(s))
			}
			r.CAFile = v[0]
		default:
			return Relay{}, fmt.Errorf("bad relay %q: unknown option %q (want tls=none or ca=FILE)", printable(s), printable(k))
		}
	}
	if r.User != "" && r.TLS == TLSNone {
		return Relay{}, fmt.Errorf("bad relay %q: AUTH goes over TLS only; drop tls=none or the user", printable(s))
	}
	return r, nil
}

// splitHostPort takes host, host:port, [v6] or [v6]:port.
func splitHostPort(s, defPort string) (string, string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, defPort
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		} else if strings.Count(host, ":") > 1 {
			// A bare IPv6 literal without a port.
		} else if strings.Contains(host, ":") {
			return "", "", err
		}
	}
	if host == "" {
		return "", "", fmt.Errorf("no host")
	}
	if len(host) > 255 || !hostChars(host) || strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return "", "", fmt.Errorf("bad host %q", printable(host))
	}
	if port == "" {
		return "", "", fmt.Errorf("empty port")
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return "", "", fmt.Errorf("bad port %q", printable(port))
		}
	}
	if len(port) > 5 || atoi(port) == 0 || atoi(port) > 65535 {
		return "", "", fmt.Errorf("bad port %q", printable(port))
	}
	return host, port, nil
}

// hostChars: a host name or an IP address (letters, digits, '.', '-',
// '_', and ':' for IPv6), nothing else.
func hostChars(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == ':') {
			return false
		}
	}
	return true
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func redact(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User(c.User.Username())
	}
	return printable(c.String())
}

// printable makes outside input fit for a message: bytes outside
// printable ASCII become '?', at most 200 bytes.
func printable(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	b := []byte(s)
	for i, c := range b {
		if c < 32 || c > 126 {
			b[i] = '?'
		}
	}
	return string(b)
}
