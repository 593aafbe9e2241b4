// Package probe finds out what speaks on a port and whether it takes a
// message: the protocol side of `qbox probe` and of `qbox mx-check
// --probe`. Port connects, listens to what the server says before being
// spoken to (an SMTP greeting, a netstring such as Postfix qmqpd's D to a
// refused client, or the silence of a QMQP or QMTP server) and judges it
// against what was expected, without sending a byte of mail. Send submits
// one small test message over QMQP, QMTP or SMTP with this module's own
// clients and reports the reply with its timings.
//
// Everything a port sends is hostile: at most maxGreeting bytes are read
// before speaking, within one deadline for the whole wait; the SMTP
// dialogue of Send is bounded by proto/smtp's client.
package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/smtp"
)

// Protocol is what a port is expected to speak.
type Protocol string

const (
	QMQP    Protocol = "qmqp"
	QMTP    Protocol = "qmtp"
	SMTP    Protocol = "smtp"
	Unknown Protocol = "" // a non-standard port without --qmqp/--qmtp/--smtp
)

// Well-known ports, and the protocol a port implies.
var defaultPorts = map[Protocol]string{QMQP: "628", QMTP: "209", SMTP: "25"}

// DefaultPort returns the well-known port of p ("" for Unknown).
func DefaultPort(p Protocol) string { return defaultPorts[p] }

// ProtocolOfPort returns the protocol a well-known port implies.
func ProtocolOfPort(port string) Protocol {
	for p, n := range defaultPorts {
		if n == port {
			return p
		}
	}
	return Unknown
}

// State is what the connection attempt found.
type State string

const (
	Open        State = "open"
	Closed      State = "closed"      // refused: nothing listens
	Filtered    State = "filtered"    // no answer within the timeout
	Unreachable State = "unreachable" // no route, or the name has no address
)

// Heard is what an open port said before we said anything.
type Heard string

const (
	Silence    Heard = "silence"     // nothing within the wait: a QMQP or QMTP server
	SMTPBanner Heard = "smtp-banner" // an SMTP reply line (220 greeting or a refusal)
	Netstring  Heard = "netstring"   // a netstring, e.g. Postfix qmqpd's D "not authorized"
	HangUp     Heard = "hang-up"     // the peer closed (or reset) without a byte
	Other      Heard = "other"       // bytes that are neither
)

// Verdict is a probe's judgement of a port, worst last (max of several
// is the worst). JSON carries its name: "ok", "unexpected" or "down".
type Verdict int

const (
	OK         Verdict = iota // the expected protocol
	Unexpected                // something else answered, or a refusal
	Down                      // closed, filtered or unreachable
)

var verdictNames = []string{OK: "ok", Unexpected: "unexpected", Down: "down"}

func (v Verdict) String() string {
	if v >= 0 && int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// MarshalText writes the verdict's name.
func (v Verdict) MarshalText() ([]byte, error) {
	if v < 0 || int(v) >= len(verdictNames) {
		return nil, fmt.Errorf("probe: no verdict %d", int(v))
	}
	return []byte(verdictNames[v]), nil
}

// UnmarshalText reads a verdict's name.
func (v *Verdict) UnmarshalText(b []byte) error {
	for i, n := range verdictNames {
		if string(b) == n {
			*v = Verdict(i)
			return nil
		}
	}
	return fmt.Errorf("probe: no verdict %q", proto.Printable(string(b), 40))
}

// Greeting is what was read from an open port, classified.
type Greeting struct {
	Heard Heard `json:"heard"`
	// Banner is an SMTP greeting's lines, made printable.
	Banner string `json:"banner,omitempty"`
	// SMTPCode is the greeting's reply code (220 is a welcome).
	SMTPCode int `json:"smtp_code,omitempty"`
	// Reply is a netstring that parsed as a K/Z/D reply.
	Reply *ReplyJSON `json:"reply,omitempty"`
	// Data is the start of anything else heard, made printable.
	Data string `json:"data,omitempty"`
}

// ReplyJSON is a K/Z/D reply as probe reports it.
type ReplyJSON struct {
	Status string `json:"status"`
	Text   string `json:"text"`
}

func replyJSON(r proto.Reply) *ReplyJSON {
	return &ReplyJSON{Status: string(r.Status), Text: proto.Printable(r.Text, 2000)}
}

// maxGreeting bounds what is read from a port before we speak.
const maxGreeting = 4096

// ClassifyGreeting says what the first bytes from a port are. complete
// reports whether more bytes could not change the answer (false for an
// SMTP greeting without its final line, a netstring cut short).
//
// A netstring is what the netstring package reads as one within
// maxGreeting bytes; bytes that start as one and break its grammar (a
// leading zero, a length over maxGreeting, no comma) are Other. Bytes
// whose digits are not followed by ':' may be an SMTP reply line
// (smtp.SniffGreeting).
func ClassifyGreeting(b []byte) (g Greeting, complete bool) {
	if len(b) == 0 {
		return Greeting{Heard: Silence}, false
	}
	body, err := netstring.NewReader(bytes.NewReader(b)).ReadBytes(maxGreeting)
	switch {
	case err == nil:
		g := Greeting{Heard: Netstring}
		if r, perr := proto.ParseReply(body); perr == nil {
			g.Reply = replyJSON(r)
		} else {
			g.Data = proto.Printable(string(body), 200)
		}
		return g, true
	case errors.Is(err, netstring.ErrUnexpectedEOF):
		if _, herr := netstring.ReadLength(bytes.NewReader(b), maxGreeting); herr == nil {
			// The length and its colon came; the body did not, yet.
			return Greeting{Heard: Netstring, Data: proto.Printable(string(b), 200)}, false
		}
		// Only digits so far: a netstring's length or an SMTP code.
	case errors.Is(err, netstring.ErrLeadingZero), errors.Is(err, netstring.ErrTooLong), errors.Is(err, netstring.ErrMissingComma):
		return Greeting{Heard: Other, Data: proto.Printable(string(b), 200)}, true
	}
	if code, lines, complete, ok := smtp.SniffGreeting(b); ok {
		return Greeting{Heard: SMTPBanner, SMTPCode: code, Banner: strings.Join(lines, " / ")}, complete
	}
	return Greeting{Heard: Other, Data: proto.Printable(string(b), 200)}, len(b) >= 64
}

// Listen reads what conn says within wait (one deadline for the whole
// wait: a trickling server cannot stretch it), without writing anything,
// and classifies it. It stops early once a complete banner or netstring
// has been read, the peer closes, or maxGreeting bytes have arrived.
func Listen(conn net.Conn, wait time.Duration) Greeting {
	conn.SetReadDeadline(time.Now().Add(wait))
	defer conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 512)
	tmp := make([]byte, 512)
	for len(buf) < maxGreeting {
		n, err := conn.Read(tmp[:min(len(tmp), maxGreeting-len(buf))])
		buf = append(buf, tmp[:n]...)
		if g, complete := ClassifyGreeting(buf); complete {
			return g
		}
		if err != nil {
			if len(buf) == 0 && !isTimeout(err) {
				return Greeting{Heard: HangUp}
			}
			break
		}
	}
	g, _ := ClassifyGreeting(buf)
	return g
}

// ConnectState classifies a failed connect.
func ConnectState(err error) State {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Closed
	case isTimeout(err):
		return Filtered
	default:
		return Unreachable
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// PortResult is the harmless probe of one address and port.
type PortResult struct {
	Addr      string   `json:"addr"` // ip:port
	Expect    Protocol `json:"expect,omitempty"`
	State     State    `json:"state"`
	ConnectMS float64  `json:"connect_ms"`
	Error     string   `json:"error,omitempty"`
	Greeting
	// TLS is what the TLS handshake showed, when the Prober speaks TLS.
	TLS     *TLSInfo `json:"tls,omitempty"`
	Verdict Verdict  `json:"verdict"`
	Note    string   `json:"note"`
}

// Prober makes connections for probes.
type Prober struct {
	// Dial makes connections; nil means a net.Dialer bound to Source.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Source is the local address to connect from ("" for any).
	Source string
	// ConnectTimeout bounds each connect; 0 means 5s.
	ConnectTimeout time.Duration
	// Wait is how long to listen for a greeting; 0 means 2s (Postfix
	// delays refusals by qmqpd_error_delay, 1s by default).
	Wait time.Duration
	// Helo is the name an SMTP Send says EHLO with; "" means this
	// machine's host name (smtp.Client's default).
	Helo string
	// TLS: Port starts with a TLS handshake (QMQPS, QMTPS, SMTPS) and
	// reports it (PortResult.TLS); the certificate is verified for
	// ServerName (default: the address's host) against TLSRoots (nil:
	// the system roots). A port that does not speak TLS is Unexpected.
	TLS        bool
	TLSRoots   *x509.CertPool
	ServerName string
}

// startTLS is the handshake that --tls starts with on a connection to
// addr, bounded by the connect timeout: the certificate is checked for
// ServerName (default: addr's host) against TLSRoots; nil and the reason
// in the info when the port does not speak TLS.
func (p *Prober) startTLS(ctx context.Context, conn net.Conn, addr string) (*tls.Conn, *TLSInfo) {
	name := p.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(addr)
	}
	timeout := p.ConnectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return handshake(ctx, conn, name, p.TLSRoots, timeout)
}

// Connect dials addr with the connect timeout and returns the time it
// took.
func (p *Prober) Connect(ctx context.Context, addr string) (net.Conn, time.Duration, error) {
	timeout := p.ConnectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	dial := p.Dial
	if dial == nil {
		d := &net.Dialer{}
		if p.Source != "" {
			ip := net.ParseIP(p.Source)
			if ip == nil {
				return nil, 0, fmt.Errorf("source %q is not an IP address", p.Source)
			}
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
		dial = d.DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	conn, err := dial(dctx, "tcp", addr)
	return conn, time.Since(start), err
}

// Port probes addr harmlessly: connect, listen for what the server says
// first, and close without having sent a byte of mail (after a polite
// QUIT to an SMTP server that greeted). expect is what should be there.
func (p *Prober) Port(ctx context.Context, addr string, expect Protocol) PortResult {
	res := PortResult{Addr: addr, Expect: expect}
	conn, took, err := p.Connect(ctx, addr)
	res.ConnectMS = ms(took)
	if err != nil {
		res.State = ConnectState(err)
		res.Error = err.Error()
		res.Verdict = Down
		res.Note = map[State]string{Closed: "nothing listens", Filtered: "no answer to the connect", Unreachable: "cannot reach"}[res.State]
		return res
	}
	defer conn.Close()
	res.State = Open
	wait := p.Wait
	if wait <= 0 {
		wait = 2 * time.Second
	}
	if p.TLS {
		tc, info := p.startTLS(ctx, conn, addr)
		res.TLS = info
		if tc == nil {
			res.Verdict, res.Note = Unexpected, "does not speak TLS: "+info.Error
			return res
		}
		defer tc.Close()
		conn = tc
	}
	res.Greeting = Listen(conn, wait)
	if res.Heard == SMTPBanner {
		// Say goodbye rather than drop the line (smtpd logs a lost
		// connection otherwise); the answer does not matter.
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(conn, "QUIT\r\n")
	}
	res.Verdict, res.Note = judge(expect, res.Greeting)
	if res.TLS != nil {
		res.Note = "TLS: " + res.TLS.String() + "; " + res.Note
		if !res.TLS.Verified && res.Verdict == OK {
			res.Verdict = Unexpected
		}
	}
	return res
}

// judge compares what was heard with what was expected.
func judge(expect Protocol, g Greeting) (Verdict, string) {
	heard := describe(g)
	switch expect {
	case QMQP, QMTP:
		name := map[Protocol]string{QMQP: "QMQP", QMTP: "QMTP"}[expect]
		switch g.Heard {
		case Silence:
			return OK, "open and silent, as a " + name + " server is (it speaks only after a whole message)"
		case Netstring:
			if g.Reply != nil && g.Reply.Status != "K" {
				return Unexpected, "refused before any data: " + heard
			}
			return Unexpected, "a netstring before any data, which " + name + " forbids: " + heard
		case SMTPBanner:
			return Unexpected, "an SMTP server, not " + name + ": " + heard
		}
		return Unexpected, heard
	case SMTP:
		if g.Heard == SMTPBanner && g.SMTPCode == 220 {
			return OK, "SMTP greeting: " + g.Banner
		}
		if g.Heard == SMTPBanner {
			return Unexpected, "SMTP refusal: " + g.Banner
		}
		if g.Heard == Silence {
			return Unexpected, "no SMTP greeting (silent: QMQP or QMTP, or a slow greeter)"
		}
		return Unexpected, "not SMTP: " + heard
	}
	return OK, heard
}

func describe(g Greeting) string {
	switch g.Heard {
	case Silence:
		return "silence (what a QMQP or QMTP server says before the message)"
	case SMTPBanner:
		return "SMTP banner " + g.Banner
	case Netstring:
		if g.Reply != nil {
			return fmt.Sprintf("reply %s %q", g.Reply.Status, g.Reply.Text)
		}
		return fmt.Sprintf("netstring %q", g.Data)
	case HangUp:
		return "closed the connection without a word"
	}
	return fmt.Sprintf("unrecognised bytes %q", g.Data)
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
