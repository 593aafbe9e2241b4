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
	"sync/atomic"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/server"
	"qbox/proto/smtp"
)

// Defaults for Config's zero fields that are serve's own; the limits'
// are proto's (server.DefaultMaxMessageSize and the rest).
const (
	// DefaultEnvelopeMemory bounds the envelope addresses all sessions
	// hold together: a lone session's largest legal envelope (10,000
	// recipients of 1,000 bytes, about 11 MiB with their overhead) always
	// fits, and --max-conns sessions sending such envelopes at once keep
	// serve under 128 MiB; the recipients that do not fit get Z and come
	// again.
	DefaultEnvelopeMemory = 32 << 20
	DefaultGrace          = 30 * time.Second
)

// Protocol names, as used for listeners, --stdio and systemd socket names.
const (
	QMQP = "qmqp"
	QMTP = "qmtp"
	SMTP = "smtp"
)

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
	// hold at once (server.AddressCost each). A QMQP package whose
	// envelope does not fit gets Z; QMTP recipients that do not fit get
	// Z (#4.5.3) and come again in a later package.
	EnvelopeMemory int64
	// MaxConns bounds concurrent sessions. A connection beyond it waits,
	// in order of arrival, up to QueueWait for the next free slot in a
	// waiting room of MaxWaiting places (0: server.DefaultWaitingFactor ×
	// MaxConns; less than 0: none); one that finds the room full or waits
	// too long is refused, closed without a reply (SMTP: 421 4.3.2), a
	// temporary failure for the client.
	MaxConns     int
	MaxWaiting   int
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
		c.MaxSize = server.DefaultMaxMessageSize
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = server.DefaultMaxRecipients
	}
	if c.MaxConns <= 0 {
		c.MaxConns = server.DefaultMaxConns
	}
	if c.EnvelopeMemory <= 0 {
		c.EnvelopeMemory = DefaultEnvelopeMemory
	}
	if c.Timeout <= 0 {
		c.Timeout = server.DefaultTimeout
	}
	if c.QueueWait <= 0 {
		c.QueueWait = min(c.Timeout, server.DefaultQueueWait)
	}
	if c.SessionLimit <= 0 {
		c.SessionLimit = server.DefaultSessionLimit
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
	Protocol string // QMQP, QMTP or SMTP
	net.Listener
	TLS bool // TLS from the first byte (QMQPS, QMTPS)
}

// Server is the three protocol servers of a Config: one envelope budget
// and one connection limit for all. Build it with NewServer.
type Server struct {
	cfg  Config
	qmqp *qmqp.Server
	qmtp *qmtp.Server
	smtp *smtp.Server

	hostnameSet bool // --hostname given: it wins over TCPLOCALHOST
}

// NewServer checks cfg and fills in its defaults.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("no store: give --maildir DIR or --queue-program PATH")
	}
	hostnameSet := cfg.Hostname != ""
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, hostnameSet: hostnameSet}
	envelopes := server.NewBudget(cfg.EnvelopeMemory)
	conns := server.NewConnLimit(cfg.MaxConns, cfg.MaxWaiting, cfg.QueueWait)
	limits := server.Limits{MaxMessageSize: cfg.MaxSize, MaxRecipients: cfg.MaxRecipients}
	s.qmqp = &qmqp.Server{
		Backend:      cfg.Backend,
		Limits:       limits,
		Timeout:      cfg.Timeout,
		SessionLimit: cfg.SessionLimit,
		Logger:       cfg.Logger,
		Envelopes:    envelopes,
		Hostname:     cfg.Hostname,
		Loop:         server.Loop{Allow: cfg.AllowFor(QMQP), Conns: conns},
	}
	s.qmtp = &qmtp.Server{
		Backend:          cfg.Backend,
		Limits:           limits,
		Timeout:          cfg.Timeout,
		SessionLimit:     cfg.SessionLimit,
		Logger:           cfg.Logger,
		RecipientAllowed: s.recipientCheck(),
		RelayClient:      relayByCertificate,
		Parallel:         cfg.QMTPParallel,
		Envelopes:        envelopes,
		Hostname:         cfg.Hostname,
		Loop:             server.Loop{Allow: cfg.AllowFor(QMTP), Conns: conns},
	}
	s.smtp = &smtp.Server{
		Backend:          cfg.Backend,
		Limits:           limits,
		Hostname:         cfg.Hostname,
		TLSConfig:        cfg.SMTPTLS,
		Timeout:          cfg.Timeout,
		SessionLimit:     cfg.SessionLimit,
		Logger:           cfg.Logger,
		RecipientAllowed: s.recipientCheck(),
		Envelopes:        envelopes,
		Loop:             server.Loop{Allow: cfg.AllowFor(SMTP), Conns: conns},
	}
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
// then shuts the servers down: no new connection, QMTP sessions waiting
// between packages and SMTP sessions outside a transaction end at once,
// the others may finish within Grace, then they are cut (a QMTP session
// still gets every reply it is owed). It returns an error only if a
// listener fails for good.
func (s *Server) Serve(ctx context.Context, ls []Listener) error {
	if len(ls) == 0 {
		return errors.New("nothing to listen on: both --qmqp and --qmtp are empty")
	}
	if err := CheckListeners(s.cfg, ls); err != nil {
		return err
	}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		name := l.Protocol
		if l.TLS {
			name += "s"
		}
		s.cfg.Logger.Info("listening", "proto", name, "addr", l.Addr().String())
		go func() { errc <- s.serveListener(l) }()
	}
	var err error
	running := len(ls)
	select {
	case <-ctx.Done():
	case err = <-errc: // a listener failed: stop everything
		running--
	}

	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Grace)
	defer cancel()
	var stopping sync.WaitGroup
	var cut atomic.Bool
	for _, srv := range []interface{ Shutdown(context.Context) error }{s.qmqp, s.qmtp, s.smtp} {
		stopping.Add(1)
		go func() {
			defer stopping.Done()
			if srv.Shutdown(grace) != nil {
				cut.Store(true)
			}
		}()
	}
	stopping.Wait()
	if cut.Load() {
		s.cfg.Logger.Warn("grace period over, sessions still running were cut", "grace", s.cfg.Grace.String())
	}
	for ; running > 0; running-- {
		<-errc
	}
	s.cfg.Logger.Info("stopped")
	if errors.Is(err, server.ErrServerClosed) {
		err = nil
	}
	return err
}

// serveListener runs the server of l's protocol on it.
func (s *Server) serveListener(l Listener) error {
	switch l.Protocol {
	case QMQP:
		return s.qmqp.Serve(l.Listener)
	case QMTP:
		return s.qmtp.Serve(l.Listener)
	case SMTP:
		return s.smtp.Serve(l.Listener)
	}
	l.Close()
	return fmt.Errorf("%s: unknown protocol %q", l.Addr(), l.Protocol)
}
