// Package smtp is qbox's SMTP client transport: many messages over one
// session, one K, Z or D per recipient, in the shape of the QMTP client
// (qbox/proto/qmtp), so a delivery engine can drive either. Its server
// side (server.go) is `serve --smtp`: go-smtp's server in front of a
// proto.Backend.
//
// go-smtp's client (github.com/emersion/go-smtp) reads the greeting,
// says EHLO (HELO when the server refuses EHLO) and parses the extensions,
// before and again after STARTTLS. Its client cannot pipeline (each of its
// Mail, Rcpt and Data calls writes one command and waits for its reply),
// so the mail transactions, and the STARTTLS command itself (go-smtp only
// offers it inside a constructor that says EHLO as "localhost" and closes
// the connection when STARTTLS is not offered), are written here on the
// same connection: MAIL, every RCPT and DATA in one batch when the server
// offers PIPELINING, then the replies read in order; and, as RFC 2920
// allows, the next message's batch written right after a message's final
// ".", before the "." reply is read, so the link does not sit idle for a
// round trip between messages (RSET only after a transaction that did not
// end with a "." reply).
//
// A reply counts only for a command fully written: the replies of a batch
// are read only once the whole batch is written, and the reply to the
// final "." only once the whole message and the "." are; and a reply whose
// first byte had reached the socket before the final byte of what it
// answers was handed to the kernel (the kernel's count of bytes received,
// read right before each write: see session.send) is a protocol violation
// that ends the session, whatever it says. Bytes from the server beyond
// the replies owed are a violation too. Every wait has a deadline that
// trickling bytes never extend.
//
// Choices where SMTP leaves room: a message with 8-bit bytes goes as it is
// to a server that does not offer 8BITMIME (qmail-remote does the same;
// refusing would bounce mail nearly every server takes, and converting
// would change its bytes); a CR in a message is sent as it is, and a
// message without a final LF gets one (SMTP cannot end the data
// otherwise); under TLSOpportunistic a refused STARTTLS goes on in plain
// text, but a failed handshake ends the session with a Z for everyone
// (the connection is unusable; the next run tries again).
package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"qbox/proto"
)

// Client defaults: tcpclient's connect timeout, and RFC 5321's (4.5.3.2)
// five minutes for a command reply and ten for the reply to the final
// "." (the data timeout also bounds writing the whole message).
const (
	DefaultConnectTimeout = 60 * time.Second
	DefaultCommandTimeout = 5 * time.Minute
	DefaultDataTimeout    = 10 * time.Minute
)

// TLSMode says when the session uses STARTTLS.
type TLSMode int

const (
	// TLSOpportunistic uses STARTTLS whenever the server offers it,
	// as MTAs do, without verifying the certificate (an unverified
	// channel still defeats a passive listener); a server that refuses
	// the STARTTLS command gets the mail in plain text.
	TLSOpportunistic TLSMode = iota
	// TLSRequire makes STARTTLS mandatory and verifies the certificate
	// against the host name given to Send: without it, every recipient
	// gets a Z and nothing is sent.
	TLSRequire
	// TLSNone never uses STARTTLS (tests, diagnosis).
	TLSNone
)

// ErrTimeout is wrapped by the session error when a deadline passed.
var ErrTimeout = errors.New("timed out")

// ErrTLSRequired is wrapped by the session error when TLSRequire could not
// be met: no STARTTLS offered, STARTTLS refused, or the handshake failed.
var ErrTLSRequired = errors.New("TLS required")

// Client delivers messages over SMTP. The zero value is usable.
type Client struct {
	ConnectTimeout time.Duration // each connection attempt; 0: DefaultConnectTimeout
	// CommandTimeout bounds the wait for the greeting and for each
	// reply to a command, and the writing of each batch of commands.
	// 0: DefaultCommandTimeout.
	CommandTimeout time.Duration
	// DataTimeout bounds writing a message (with its final ".") and,
	// again, the wait for the reply to it. 0: DefaultDataTimeout.
	DataTimeout time.Duration
	// Helo is the name given in EHLO or HELO; "" means this machine's
	// host name. The caller chooses it (qmail's rule, control/helohost
	// then control/me, is control.Helo in proto/qmail/control).
	Helo string
	TLS  TLSMode
	// TLSConfig is the base of the STARTTLS configuration (cloned; nil
	// is an empty one). TLSOpportunistic skips verification whatever it
	// says; TLSRequire sets ServerName to Send's host when it is empty.
	TLSConfig *tls.Config
	// Dial overrides how connections are made.
	Dial proto.DialFunc
	// Auth, when set, authenticates the session (auth.go), inside TLS
	// only: after STARTTLS, or on a connection Send is given in TLS.
	Auth *Auth

	testPause *pauseHook // the offset walk's (scripted_test.go)
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Connect connects to the first of addrs (host:port) that accepts. Only a
// failed connect moves on to the next address.
func (c *Client) Connect(ctx context.Context, addrs []string) (net.Conn, string, error) {
	d := proto.Dialer{Dial: c.Dial, Timeout: orDefault(c.ConnectTimeout, DefaultConnectTimeout), Protocol: "smtp"}
	conn, i, err := d.DialFirst(ctx, addrs, nil)
	if err != nil {
		return nil, "", err
	}
	return conn, addrs[i], nil
}

// Deliver connects to the first reachable of addrs and sends msgs there
// (see Send); the host name for TLSRequire's verification is the host
// part of the address connected to. When no address accepts it returns a
// *proto.ConnectError and delivers no result.
func (c *Client) Deliver(ctx context.Context, addrs []string, msgs []proto.Message, onResult func(proto.Result)) (proto.SessionStats, error) {
	conn, addr, err := c.Connect(ctx, addrs)
	if err != nil {
		return proto.SessionStats{}, err
	}
	defer conn.Close()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return c.Send(ctx, conn, host, msgs, onResult)
}

// Send runs one SMTP session on conn with the server named host (the name
// TLSRequire verifies the certificate against) and calls onResult once for
// every recipient of every message, in order (never concurrently): RCPT's
// 4xx is Z and 5xx is D; a recipient RCPT accepted gets the reply to the
// message's final "."; a refused MAIL or DATA gives its reply to every
// recipient it concerns. Messages follow one another on the session, RSET
// between them without PIPELINING; with it, each message's MAIL, RCPTs
// and DATA follow the previous message's "." in one batch, and RSET
// follows only a transaction that did not end with a ".". When the
// session ends early — connection lost, timeout, protocol violation,
// greeting or EHLO refused, TLS required but not available — every
// recipient not yet answered gets a Z, and Send returns
// the error that ended the session. Send does not close conn.
//
// When the channel of proto.StopStarting(ctx) closes, no further message
// is started (its MAIL is not written), the ones not started get a Z
// saying so, and Send returns an error wrapping proto.ErrInterrupted. A
// stop that comes while the next message's batch is already on its way
// (PIPELINING) abandons that message before its data: its recipients get
// the same Z, and Send returns without reading the replies owed (the
// caller's closing the connection ends the transaction; without its "."
// the server delivers nothing). Cancelling ctx ends everything at
// once.
//
// A message without recipients, or whose envelope fails
// proto.CheckEnvelope, is refused before anything is sent.
func (c *Client) Send(ctx context.Context, conn net.Conn, host string, msgs []proto.Message, onResult func(proto.Result)) (proto.SessionStats, error) {
	for i := range msgs {
		if len(msgs[i].Recipients) == 0 {
			return proto.SessionStats{}, fmt.Errorf("smtp: message %d has no recipients", i)
		}
		if err := proto.CheckEnvelope(proto.Envelope{Sender: msgs[i].Sender, Recipients: msgs[i].Recipients}); err != nil {
			return proto.SessionStats{}, fmt.Errorf("smtp: message %d: %w", i, err)
		}
	}
	helo := c.Helo
	if helo == "" {
		var err error
		if helo, err = os.Hostname(); err != nil || helo == "" {
			return proto.SessionStats{}, fmt.Errorf("smtp: no helo name given and no host name: %v", err)
		}
	}
	if strings.ContainsAny(helo, "\r\n\x00 ") {
		return proto.SessionStats{}, fmt.Errorf("smtp: helo name %q is not a host name", proto.Printable(helo, 100))
	}
	s := &session{
		c:        c,
		ctx:      ctx,
		host:     host,
		helo:     helo,
		msgs:     msgs,
		onResult: onResult,
		cc:       &countConn{Conn: conn},
		cmdTO:    orDefault(c.CommandTimeout, DefaultCommandTimeout),
		dataTO:   orDefault(c.DataTimeout, DefaultDataTimeout),
	}
	stopWatch := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stopWatch()

	err := s.run()
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("smtp: %w (%v)", ctx.Err(), err)
	}
	s.failRest(err)
	return proto.SessionStats{BytesOut: s.cc.out, BytesIn: s.cc.in, Replies: s.replies}, err
}

type session struct {
	c        *Client
	ctx      context.Context
	host     string
	helo     string
	msgs     []proto.Message
	onResult func(proto.Result)
	cc       *countConn
	tlsConn  *tls.Conn // after STARTTLS, over cc
	w        *wireConn // what commands and replies go through
	cmdTO    time.Duration
	dataTO   time.Duration

	// What the server offers.
	pipelining bool
	eightBit   bool
	sizeOK     bool  // SIZE offered
	maxSize    int64 // its limit; 0: none

	replies int
	next    int // first message whose results are not all delivered
	cur     *tx // message next, while it is under way
	// dot: the message whose "." was written and whose reply is still
	// owed (PIPELINING: it is read after the next message's first
	// batch); it is cur.
	dot *tx
	// txOpen: a transaction may be open on the server (MAIL written and
	// no complete "." since), so the next one starts with RSET.
	txOpen bool
	// notStarted: the session stopped (StopStarting) before message next.
	notStarted bool
}

// serverRefused ends the session on a reply that refuses it (greeting,
// EHLO and HELO, RSET, STARTTLS under TLSRequire): every recipient not yet
// answered gets a Z with the server's words.
type serverRefused struct {
	step  string
	stage proto.Stage
	text  string
}

func (e *serverRefused) Error() string {
	return fmt.Sprintf("smtp: %s: %s", e.step, e.text)
}

func (s *session) run() error {
	if err := s.hello(); err != nil {
		return err
	}
	for i := range s.msgs {
		if proto.StoppedStarting(s.ctx) {
			if err := s.settleDot(); err != nil {
				return err
			}
			return s.errStopped()
		}
		if err := s.transaction(i); err != nil {
			return err
		}
	}
	if err := s.settleDot(); err != nil {
		return err
	}
	s.quit()
	return nil
}

// hello runs go-smtp's greeting and EHLO, then STARTTLS and go-smtp's
// EHLO again inside TLS.
func (s *session) hello() error {
	w := newWireConn(s.ctx, s.cc)
	cl, err := s.goSMTPHello(w)
	if err != nil {
		return err
	}
	starttls, _ := cl.Extension("STARTTLS")
	switch {
	case s.c.TLS == TLSNone:
	case starttls:
		ok, err := s.startTLS(w)
		if err != nil {
			return err
		}
		if ok {
			w = newWireConn(s.ctx, s.tlsConn)
			// go-smtp's client reads a greeting before its EHLO; after
			// STARTTLS there is none (RFC 3207), so it is given one
			// here that never came from the server.
			w.synthetic = []byte("220 STARTTLS\r\n")
			s.replies-- // not the server's
			if cl, err = s.goSMTPHello(w); err != nil {
				return err
			}
		}
	case s.c.TLS == TLSRequire:
		return fmt.Errorf("smtp: %w: %s does not offer STARTTLS", ErrTLSRequired, s.host)
	}
	s.w = w
	if s.c.Auth != nil {
		ok, ext := cl.Extension("AUTH")
		if err := s.authenticate(ok, ext); err != nil {
			return err
		}
	}
	s.pipelining, _ = cl.Extension("PIPELINING")
	s.eightBit, _ = cl.Extension("8BITMIME")
	if ok, _ := cl.Extension("SIZE"); ok {
		s.sizeOK = true
		if n, ok := cl.MaxMessageSize(); ok {
			s.maxSize = int64(n)
		}
	}
	return nil
}

// goSMTPHello reads the greeting (unless after STARTTLS) and says EHLO
// through go-smtp, falling back to HELO when the server refuses EHLO with
// any 5xx (go-smtp itself falls back only on 500 and 502).
func (s *session) goSMTPHello(w *wireConn) (*gosmtp.Client, error) {
	w.budget = goSMTPBudget
	defer func() { w.budget = -1 }()
	cl := gosmtp.NewClient(w)
	cl.CommandTimeout = s.cmdTO
	outBefore := s.cc.out
	err := cl.Hello(s.helo)
	if err == nil {
		s.replies += 2
		return cl, nil
	}
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		return nil, s.networkError("the greeting or the EHLO reply", s.cmdTO, err)
	}
	if s.cc.out == outBefore {
		s.replies++
		return nil, &serverRefused{step: "greeting", stage: proto.StageGreeting, text: smtpErrorText(se)}
	}
	s.replies += 2
	if se.Code/100 != 5 || se.Code == 500 || se.Code == 502 {
		// go-smtp's HELO was refused too, or EHLO got a 4xx.
		return nil, &serverRefused{step: "EHLO/HELO", stage: proto.StageHello, text: smtpErrorText(se)}
	}
	r, err := s.command("HELO "+s.helo, w)
	if err != nil {
		return nil, err
	}
	if r.class() != 2 {
		return nil, &serverRefused{step: "HELO", stage: proto.StageHello, text: r.text}
	}
	return cl, nil // no extensions: go-smtp's EHLO failed
}

func smtpErrorText(se *gosmtp.SMTPError) string {
	s := fmt.Sprintf("%03d", se.Code)
	if c := se.EnhancedCode; c != (gosmtp.EnhancedCode{}) && c != gosmtp.NoEnhancedCode {
		s += fmt.Sprintf(" %d.%d.%d", c[0], c[1], c[2])
	}
	if se.Message != "" {
		s += " " + se.Message
	}
	return proto.OneLine(proto.Printable(s, proto.MaxReplyText))
}

// startTLS sends STARTTLS and shakes hands. It returns false when the
// server refused STARTTLS and the session goes on in plain text.
func (s *session) startTLS(w *wireConn) (bool, error) {
	r, err := s.command("STARTTLS", w)
	if err != nil {
		return false, err
	}
	if r.code != 220 {
		if s.c.TLS == TLSRequire {
			return false, fmt.Errorf("smtp: %w: STARTTLS refused: %s", ErrTLSRequired, r.text)
		}
		return false, nil
	}
	if w.buffered() > 0 || proto.MarkArrivals(s.cc.Conn).Early(w.total) {
		// Bytes sent before the handshake would be read as if they came
		// inside TLS (the STARTTLS injection attack): whether the reader
		// holds them or they are on the socket, the session ends. Any
		// that arrive later go into the handshake and fail it: none is
		// ever read as a reply inside TLS.
		return false, fmt.Errorf("smtp: %w: bytes after the STARTTLS reply, before TLS", proto.ErrRemoteViolation)
	}
	var cfg *tls.Config
	if s.c.TLSConfig != nil {
		cfg = s.c.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if s.c.TLS == TLSRequire {
		if cfg.ServerName == "" {
			cfg.ServerName = s.host
		}
	} else {
		cfg.InsecureSkipVerify = true
	}
	tc := tls.Client(s.cc, cfg) // over the counting connection
	tc.SetDeadline(time.Now().Add(s.cmdTO))
	if s.ctx.Err() != nil {
		tc.SetDeadline(time.Unix(1, 0))
	}
	err = tc.Handshake()
	tc.SetDeadline(time.Time{})
	if err != nil {
		if s.c.TLS == TLSRequire {
			return false, fmt.Errorf("smtp: %w: TLS handshake with %s: %v", ErrTLSRequired, s.host, err)
		}
		return false, s.networkError("the TLS handshake", s.cmdTO, err)
	}
	s.tlsConn = tc
	return true, nil
}
