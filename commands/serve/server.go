// Package serve is `qbox serve`: a QMQP and QMTP server in front of a
// durable maildir store or a qmail-queue compatible program, with access
// control, limits and a graceful stop.
package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/smtp"
)

// Defaults for Config's zero fields.
const (
	DefaultMaxSize       = 10 << 20
	DefaultMaxRecipients = 10000
	DefaultMaxConns      = 200
	// DefaultEnvelopeMemory bounds the envelope addresses all sessions
	// hold together: a lone session's largest legal envelope (10,000
	// recipients of 1,000 bytes, about 11 MiB with their overhead) always
	// fits, and --max-conns sessions sending such envelopes at once keep
	// serve under 128 MiB; the recipients that do not fit get Z and come
	// again.
	DefaultEnvelopeMemory = 32 << 20
	DefaultTimeout        = 60 * time.Second
	DefaultSessionLimit   = time.Hour
	DefaultGrace          = 30 * time.Second
)

// Protocol names, as used for listeners, --stdio and systemd socket names.
const (
	QMQP = "qmqp"
	QMTP = "qmtp"
)

// NotAuthorized is the text of the immediate D a refused client gets.
const NotAuthorized = "sorry, not authorized to use this service (#5.7.1)"

// Config is everything the server core needs; the CLI fills it from flags.
type Config struct {
	Backend  proto.Backend
	Hostname string // this server's name in Received lines
	// Allow lists the client networks served. Empty means loopback only
	// (127.0.0.0/8 and ::1); a non-empty list replaces that default.
	Allow []netip.Prefix
	// AllowQMTP, when not nil, replaces Allow for QMTP: a QMTP port may be
	// open to the world for incoming mail where QMQP never should be.
	AllowQMTP []netip.Prefix
	// RcptHosts, when set, limits the recipients QMTP clients may send to
	// (qmail's control/rcpthosts), except for clients in Relay and, under
	// --stdio, when RELAYCLIENT is set (RelayAll). QMQP clients are
	// trusted, as qmail-qmqpd trusts them.
	RcptHosts     *RcptHosts
	Relay         []netip.Prefix
	RelayAll      bool
	MaxSize       int64
	MaxRecipients int
	// EnvelopeMemory bounds the bytes of envelope addresses all sessions
	// hold at once (proto.AddressCost each). A QMQP package whose
	// envelope does not fit gets Z; QMTP recipients that do not fit get
	// Z (#4.5.3) and come again in a later package.
	EnvelopeMemory int64
	// MaxConns bounds concurrent sessions. A connection beyond it waits
	// up to QueueWait for a free slot (at most MaxConns of them wait),
	// and is otherwise closed without a reply: a temporary failure for
	// the client.
	MaxConns     int
	QueueWait    time.Duration
	Timeout      time.Duration // idle, per read and per write
	SessionLimit time.Duration
	// Grace is how long in-flight sessions may run on after a stop is
	// requested; then they are cut (a QMTP session still gets every reply
	// it is owed).
	Grace  time.Duration
	Logger *slog.Logger
	// QMTPParallel is how many packages of one QMTP session are
	// committed at once while it reads on; 0 means qmtp.DefaultParallel.
	QMTPParallel int
	// SMTPTLS, when set, makes the SMTP listener offer STARTTLS.
	SMTPTLS *tls.Config
}

func (c Config) withDefaults() Config {
	if c.MaxSize <= 0 {
		c.MaxSize = DefaultMaxSize
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.EnvelopeMemory <= 0 {
		c.EnvelopeMemory = DefaultEnvelopeMemory
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.QueueWait <= 0 {
		c.QueueWait = min(c.Timeout, 10*time.Second)
	}
	if c.SessionLimit <= 0 {
		c.SessionLimit = DefaultSessionLimit
	}
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
		if c.Hostname == "" {
			c.Hostname = "localhost"
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Listener is a listening socket and the protocol spoken on it.
type Listener struct {
	Protocol string // QMQP or QMTP
	net.Listener
}

// Server runs sessions for a Config. Build it with NewServer.
type Server struct {
	cfg  Config
	qmqp *qmqp.Server
	qmtp *qmtp.Server
	smtp *smtp.Server

	hostnameSet bool // --hostname given: it wins over TCPLOCALHOST

	slots   chan struct{} // one token per running session
	waiting chan struct{} // one token per connection waiting for a slot
	active  sync.WaitGroup
}

// NewServer checks cfg and fills in its defaults.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("no store: give --maildir DIR or --queue-program PATH")
	}
	hostnameSet := cfg.Hostname != ""
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:         cfg,
		hostnameSet: hostnameSet,
		slots:       make(chan struct{}, cfg.MaxConns),
		waiting:     make(chan struct{}, cfg.MaxConns),
	}
	envelopes := proto.NewBudget(cfg.EnvelopeMemory)
	s.qmqp = &qmqp.Server{
		Envelopes:    envelopes,
		Backend:      cfg.Backend,
		Limits:       qmqp.Limits{MaxMessageSize: cfg.MaxSize, MaxRecipients: cfg.MaxRecipients},
		Timeout:      cfg.Timeout,
		SessionLimit: cfg.SessionLimit,
		Logger:       cfg.Logger,
	}
	s.qmtp = &qmtp.Server{
		Envelopes:    envelopes,
		Backend:      cfg.Backend,
		Limits:       qmtp.Limits{MaxMessageSize: cfg.MaxSize, MaxRecipients: cfg.MaxRecipients},
		Parallel:     cfg.QMTPParallel,
		Timeout:      cfg.Timeout,
		SessionLimit: cfg.SessionLimit,
		Logger:       cfg.Logger,
	}
	s.qmtp.RecipientAllowed = s.recipientCheck()
	s.smtp = s.newSMTPServer(envelopes)
	return s, nil
}

// AllowFor is the access list for protocol. SMTP, the other public MX
// port beside QMTP, takes QMTP's list.
func (c Config) AllowFor(protocol string) []netip.Prefix {
	if (protocol == QMTP || protocol == SMTP) && c.AllowQMTP != nil {
		return c.AllowQMTP
	}
	return c.Allow
}

// CheckListeners refuses a configuration that would open QMQP or QMTP to
// other hosts by accident: a listener on a non-loopback address with no
// access list for its protocol.
func CheckListeners(cfg Config, ls []Listener) error {
	for _, l := range ls {
		if len(cfg.AllowFor(l.Protocol)) > 0 {
			continue
		}
		ap, err := netip.ParseAddrPort(l.Addr().String())
		if err != nil {
			continue // not TCP/IP (a unix socket): local by nature
		}
		if !ap.Addr().Unmap().IsLoopback() {
			return fmt.Errorf("%s listens on %s, which is not a loopback address, and no --allow is given: "+
				"anyone who reaches it could send mail as anyone to anyone; add --allow CIDR for the clients to serve",
				l.Protocol, l.Addr())
		}
	}
	return nil
}

// Serve accepts connections on every listener until ctx is cancelled,
// then closes the listeners, lets running sessions finish within Grace,
// cuts the rest and returns. It returns an error only if a listener fails
// for good.
func (s *Server) Serve(ctx context.Context, ls []Listener) error {
	if len(ls) == 0 {
		return errors.New("nothing to listen on: both --qmqp and --qmtp are empty")
	}
	if err := CheckListeners(s.cfg, ls); err != nil {
		return err
	}
	// Sessions get their own context: a stop request only closes the
	// listeners and ends QMTP sessions waiting between packages; the rest
	// are cancelled when the grace period is over.
	s.qmtp.Stopping = ctx.Done()
	s.smtp.Stopping = ctx.Done()
	sessCtx, cutSessions := context.WithCancel(context.WithoutCancel(ctx))
	defer cutSessions()

	errc := make(chan error, len(ls))
	var accepting sync.WaitGroup
	for _, l := range ls {
		s.cfg.Logger.Info("listening", "proto", l.Protocol, "addr", l.Addr().String())
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			errc <- s.acceptLoop(ctx, sessCtx, l)
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc: // a listener failed: stop everything
	}
	for _, l := range ls {
		l.Close()
	}
	accepting.Wait()

	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.Grace):
		s.cfg.Logger.Warn("grace period over, cutting sessions still running", "grace", s.cfg.Grace.String())
		cutSessions()
		<-done
	}
	s.cfg.Logger.Info("stopped")
	return err
}

func (s *Server) acceptLoop(ctx, sessCtx context.Context, l Listener) error {
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait and go on,
			// never exit the server for it.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.cfg.Logger.Error("accept failed", "proto", l.Protocol, "err", err.Error(), "retry_in", backoff.String())
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		s.active.Add(1)
		go func() {
			defer s.active.Done()
			s.handleNet(sessCtx, l.Protocol, c)
		}()
	}
}

// handleNet serves one accepted connection.
func (s *Server) handleNet(ctx context.Context, protocol string, c net.Conn) {
	defer c.Close()
	start := time.Now()
	ip := proto.RemoteIP(c.RemoteAddr())
	peer := proto.Peer{RemoteIP: ip.String(), LocalHost: s.cfg.Hostname}
	if !ip.IsValid() {
		peer.RemoteIP = ""
	}
	if !s.allowed(protocol, ip) {
		s.refuse(protocol, c, peer.RemoteIP, start)
		lingerClose(c)
		return
	}
	if !s.acquire(ctx) {
		s.cfg.Logger.Warn("connection refused: too many connections", "proto", protocol, "remote", peer.RemoteIP,
			"max_conns", s.cfg.MaxConns)
		return
	}
	replied := s.session(ctx, protocol, c, peer, start)
	<-s.slots
	if replied && protocol == QMQP {
		// The reply may have gone out before the client finished sending
		// (a refused size): closing now could reset the connection and
		// destroy the reply before the client reads it.
		lingerClose(c)
	}
}

// acquire takes a session slot, waiting up to QueueWait if all are busy.
func (s *Server) acquire(ctx context.Context) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	select {
	case s.waiting <- struct{}{}:
	default:
		return false // the waiting room is full as well
	}
	defer func() { <-s.waiting }()
	t := time.NewTimer(s.cfg.QueueWait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// session runs one protocol session and logs the connection line (for
// QMQP only when no message line was written: one connection carries one
// message, and one event is one line). It reports whether a QMQP reply was written.
func (s *Server) session(ctx context.Context, protocol string, c proto.Conn, peer proto.Peer, start time.Time) bool {
	log := s.cfg.Logger
	switch protocol {
	case SMTP:
		s.smtpSession(ctx, c, peer, start)
		return false
	case QMQP:
		res, err := s.qmqp.ServeConn(ctx, c, peer)
		attrs := []any{"proto", "QMQP", "remote", peer.RemoteIP, "ms", time.Since(start).Milliseconds()}
		if res.Replied {
			attrs = append(attrs, "reply", proto.Printable(res.Reply.String(), 200))
		}
		switch {
		case err != nil:
			log.Info("connection ended without a reply", append(attrs, "err", err.Error())...)
		case res.Size < 0:
			log.Info("connection", attrs...)
		} // else the message line, with the same reply, said it all
		return res.Replied
	default:
		res, err := s.qmtp.ServeConn(ctx, c, peer)
		attrs := []any{"proto", "QMTP", "remote", peer.RemoteIP, "ms", time.Since(start).Milliseconds(),
			"packages", res.Packages, "accepted", res.Accepted, "deferred", res.Deferred, "rejected", res.Rejected,
			"bytes", res.Bytes}
		if err != nil {
			log.Info("connection ended", append(attrs, "err", err.Error())...)
		} else {
			log.Info("connection", attrs...)
		}
		return false
	}
}

// refuse answers a client outside Allow with an immediate D, as Postfix's
// qmqpd does, and logs it.
func (s *Server) refuse(protocol string, w proto.Conn, ip string, start time.Time) {
	if protocol == SMTP {
		s.refuseSMTP(w, ip, start)
		return
	}
	w.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	err := qmqp.Refuse(w, NotAuthorized)
	attrs := []any{"proto", protocol, "remote", ip, "ms", time.Since(start).Milliseconds()}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	s.cfg.Logger.Warn("client not authorized", attrs...)
}

// allowed applies the protocol's access list: loopback only by default.
func (s *Server) allowed(protocol string, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	list := s.cfg.AllowFor(protocol)
	if len(list) == 0 {
		return ip.IsLoopback()
	}
	return inPrefixes(list, ip)
}

// lingerClose half-closes c and reads what the client still sends, for a
// short bounded while, so the kernel does not answer unread data with a
// reset that would destroy a reply already written.
func lingerClose(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return
	}
	if cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	for n := 0; n < 1<<20; {
		k, err := c.Read(buf)
		n += k
		if err != nil {
			return
		}
	}
}
