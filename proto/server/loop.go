// The lifecycle the QMQP, QMTP and SMTP servers share: the accept loop
// with its backoff, the access check and its immediate refusal,
// connection slots, linger, the per-connection log line's frame, and
// Shutdown and Close.

package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"qbox/proto"
)

// Config is what a server tells the loop about itself, for each call.
type Config struct {
	Protocol string        // "QMQP", "QMTP" or "SMTP", for log lines
	Timeout  time.Duration // bounds the refusal's write; 0 means DefaultTimeout
	Hostname string        // Peer.LocalHost of accepted connections
	Logger   *slog.Logger  // nil: no log lines
	// Refuse writes the immediate refusal a client outside Allow gets.
	Refuse func(w io.Writer) error
	// Busy, if set, writes the refusal a connection gets when no session
	// slot is free for it (the waiting room is full, or its wait is
	// over): SMTP's 421 greeting. Nil closes the connection without a
	// word, a temporary failure for a QMQP or QMTP client (a reply could
	// only come before the client has sent its package, and be lost).
	Busy func(w io.Writer) error
	// Session runs one session on c and says how it went; the loop
	// writes the connection's log line from that.
	Session func(ctx context.Context, c Conn, peer proto.Peer) Outcome
}

// Outcome is what a session tells the loop when it returns.
type Outcome struct {
	// Linger: the client may still be sending, so that closing now could
	// reset the connection and destroy a reply; the loop lingers.
	Linger bool
	// LingerIfUnread: the session replied after reading all its client
	// was to send; the loop lingers only if the client left input unread
	// all the same (or it cannot tell: TLS), else closes at once.
	LingerIfUnread bool
	// Logged: the session's own lines (a message's) said all there is
	// to say, so the loop writes no connection line.
	Logged bool
	// Attrs are the connection line's attributes after proto, remote
	// and ms: what the session carried.
	Attrs []any
	// Err says why the session ended, when it was not the client's QUIT
	// or close: a timeout, a shutdown, a protocol error.
	Err error
}

// session runs c.Session and logs its connection line: "connection",
// or "connection ended" with the error.
func (c *Config) session(ctx context.Context, conn Conn, peer proto.Peer, start time.Time) Outcome {
	o := c.Session(ctx, conn, peer)
	if o.Logged || c.Logger == nil {
		return o
	}
	attrs := append([]any{"proto", c.Protocol, "remote", peer.RemoteIP, "ms", time.Since(start).Milliseconds()}, o.Attrs...)
	if o.Err != nil {
		c.Logger.Info("connection ended", append(attrs, "err", o.Err.Error())...)
	} else {
		c.Logger.Info("connection", attrs...)
	}
	return o
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Config) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Loop is the state of one server's listeners and sessions. The zero
// value is ready; it must not be copied once used.
//
// A protocol's Server embeds a Loop, which gives it Allow, Conns,
// Shutdown and Close, and writes Serve and HandleConn as calls of the
// Loop's with its own Config, so the lifecycle is written once for QMQP,
// QMTP and SMTP.
type Loop struct {
	// Allow lists the client networks Serve and HandleConn serve; empty
	// means loopback only (127.0.0.0/8, ::1). A client outside it gets
	// the protocol's refusal at once (QMQP and QMTP: D, NotAuthorized;
	// SMTP: a 554 greeting) and nothing is read.
	Allow []netip.Prefix
	// Conns, if set, bounds the sessions Serve runs, shared with other
	// servers; nil means a limit of this server's own of DefaultMaxConns.
	Conns *ConnLimit

	mu        sync.Mutex
	ready     bool
	sessCtx   context.Context // the sessions' context; cancelled to cut them
	cut       context.CancelFunc
	stopCtx   context.Context // done once Shutdown or Close was called
	stop      context.CancelFunc
	listeners map[net.Listener]struct{}
	active    sync.WaitGroup
	conns     *ConnLimit // the default one, made on first use
}

func (lp *Loop) init() {
	if lp.ready {
		return
	}
	lp.ready = true
	lp.sessCtx, lp.cut = context.WithCancel(context.Background())
	lp.stopCtx, lp.stop = context.WithCancel(context.Background())
	lp.listeners = map[net.Listener]struct{}{}
}

// ShuttingDown is closed once Shutdown or Close is called: sessions
// between units of work (TimedConn.DrainOn) end there.
func (lp *Loop) ShuttingDown() <-chan struct{} {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	lp.init()
	return lp.stopCtx.Done()
}

// Serve accepts connections on l and serves each in its own goroutine
// until Shutdown or Close, then returns ErrServerClosed; it returns
// another error only if l fails for good (closed by someone else). A
// failed Accept (out of file descriptors and the like) is retried after a
// growing pause, never fatal. l is closed when Serve returns.
func (lp *Loop) Serve(l net.Listener, cfg *Config) error {
	lp.mu.Lock()
	lp.init()
	if lp.stopCtx.Err() != nil {
		lp.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	lp.listeners[l] = struct{}{}
	lp.mu.Unlock()
	defer func() {
		lp.mu.Lock()
		delete(lp.listeners, l)
		lp.mu.Unlock()
		l.Close()
	}()

	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if lp.stopCtx.Err() != nil {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			cfg.logger().Error("accept failed", "proto", cfg.Protocol, "err", err.Error(), "retry_in", backoff.String())
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-lp.stopCtx.Done():
			}
			t.Stop()
			continue
		}
		backoff = 0
		lp.mu.Lock()
		if lp.stopCtx.Err() != nil {
			lp.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		lp.active.Add(1)
		lp.mu.Unlock()
		lp.admit(c, cfg)
	}
}

// admit decides, in the accept loop and so in the order connections
// arrive, what becomes of c: a client outside Allow is refused (lingering
// in one of the limit's linger places, or at once when they are all
// taken); another gets a ticket, a session slot or a place in the waiting
// room, and its goroutine (Go's); with every slot and place taken it is refused
// at once. Whatever is held is bounded by the limit, never by how many
// clients come: a connection is closed before its place is given back.
// It calls lp.active.Done when c is done with.
func (lp *Loop) admit(c net.Conn, cfg *Config) {
	start := time.Now()
	ip := RemoteIP(c.RemoteAddr())
	peer := proto.Peer{LocalHost: cfg.Hostname}
	if ip.IsValid() {
		peer.RemoteIP = ip.String()
	}
	conns := lp.limit(cfg)
	if !Allowed(lp.Allow, ip) {
		if !conns.StartLinger() {
			// Every linger place is taken: write the refusal (a fresh
			// socket's buffer takes it at once) and close.
			refuse(cfg, c, peer.RemoteIP, start, refuseNow)
			c.Close()
			lp.active.Done()
			return
		}
		Go(func() {
			defer lp.active.Done()
			refuse(cfg, c, peer.RemoteIP, start, cfg.timeout())
			Linger(c)
			c.Close()
			conns.EndLinger()
		})
		return
	}
	ticket := conns.Enter()
	if ticket == nil {
		busy(cfg, c, peer.RemoteIP, conns, "waiting room full", start, refuseNow)
		c.Close()
		lp.active.Done()
		return
	}
	Go(func() {
		defer lp.active.Done()
		lp.handle(c, cfg, conns, ticket, peer, start)
	})
}

// refuseNow bounds a refusal written in the accept loop: the write goes
// into a fresh socket's empty buffer, so it never needs longer, and a
// stalled one must not hold up the loop.
const refuseNow = 100 * time.Millisecond

// handle serves one admitted connection: it waits for its slot, runs the
// session, lingers if the session asks and a linger place is free, and
// closes c, then gives up its place.
func (lp *Loop) handle(c net.Conn, cfg *Config, conns *ConnLimit, ticket *Ticket, peer proto.Peer, start time.Time) {
	defer ticket.Leave()
	defer c.Close()
	if !ticket.Wait(lp.stopCtx) {
		if lp.stopCtx.Err() != nil {
			return // stopping: no refusal to log
		}
		busy(cfg, c, peer.RemoteIP, conns, "waited too long", start, cfg.timeout())
		return
	}
	o := func() Outcome {
		defer ticket.Release() // whatever the session does, the slot comes back
		if !handshake(lp.sessCtx, c, cfg, peer.RemoteIP, start) {
			return Outcome{}
		}
		return cfg.session(lp.sessCtx, c, peer, start)
	}()
	linger := o.Linger || o.LingerIfUnread && inputLeft(c)
	// A lingering connection leaves its place in the waiting room (it
	// is counted in the linger places instead): a client that read its
	// reply and comes again at once finds it free.
	if linger && conns.StartLinger() {
		ticket.Leave()
		Linger(c)
		c.Close()
		conns.EndLinger()
	}
}

// bound bounds the reads and the writes of a refusal: on a TLS listener's
// connection the write first runs the handshake, whose reads would
// otherwise wait for a client hello without end (in the accept loop,
// holding up every connection after it).
func bound(c Conn, within time.Duration) {
	end := time.Now().Add(within)
	c.SetReadDeadline(end)
	c.SetWriteDeadline(end)
}

// handshake runs the TLS handshake of a TLS listener's connection (any
// connection with a HandshakeContext method) within the idle time, before
// the session: a client that never sends its hello gives its slot back
// then, as an idle one does. It reports whether the session may run, and
// logs a failed handshake. Other connections pass as they are.
func handshake(ctx context.Context, c net.Conn, cfg *Config, ip string, start time.Time) bool {
	h, ok := c.(interface{ HandshakeContext(context.Context) error })
	if !ok {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout())
	defer cancel()
	err := h.HandshakeContext(ctx)
	if err != nil {
		cfg.logger().Info("TLS handshake failed", "proto", cfg.Protocol, "remote", ip, "ms", time.Since(start).Milliseconds(), "err", err.Error())
	}
	return err == nil
}

// busy refuses a connection no slot is free for, with cfg.Busy if set,
// and logs it.
func busy(cfg *Config, c net.Conn, ip string, conns *ConnLimit, why string, start time.Time, within time.Duration) {
	var err error
	if cfg.Busy != nil {
		bound(c, within)
		err = cfg.Busy(c)
	}
	attrs := []any{"proto", cfg.Protocol, "remote", ip, "max_conns", conns.Max(), "waiting", conns.Waiting(),
		"why", why, "ms", time.Since(start).Milliseconds()}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	cfg.logger().Warn("connection refused: too many connections", attrs...)
}

func (lp *Loop) limit(cfg *Config) *ConnLimit {
	if lp.Conns != nil {
		return lp.Conns
	}
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.conns == nil {
		lp.conns = NewConnLimit(DefaultMaxConns, 0, min(cfg.timeout(), DefaultQueueWait))
	}
	return lp.conns
}

// HandleConn serves one connection accepted elsewhere (stdin and stdout
// under tcpserver or inetd): the access check on peer.RemoteIP (an empty
// one is a local pipe, a local user: served), the session and its log
// line, under ctx. It takes no connection slot and does not linger.
func (lp *Loop) HandleConn(ctx context.Context, c Conn, peer proto.Peer, cfg *Config) {
	start := time.Now()
	if peer.LocalHost == "" {
		peer.LocalHost = cfg.Hostname
	}
	if peer.RemoteIP != "" {
		ip, err := netip.ParseAddr(peer.RemoteIP)
		if err != nil || !Allowed(lp.Allow, ip) {
			refuse(cfg, c, peer.RemoteIP, start, cfg.timeout())
			return
		}
	}
	cfg.session(ctx, c, peer, start)
}

// refuse answers a client outside the access list at once, as Postfix's
// qmqpd does, and logs it.
func refuse(cfg *Config, c Conn, ip string, start time.Time, within time.Duration) {
	bound(c, within)
	err := cfg.Refuse(c)
	attrs := []any{"proto", cfg.Protocol, "remote", ip, "ms", time.Since(start).Milliseconds()}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	cfg.logger().Warn("client not authorized", attrs...)
}

// Allowed applies an access list: loopback only when it is empty; an
// invalid (unknown) address never.
func Allowed(list []netip.Prefix, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	if len(list) == 0 {
		return ip.IsLoopback()
	}
	for _, p := range list {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// beginStop stops accepting: closes the listeners and ShuttingDown.
func (lp *Loop) beginStop() {
	lp.mu.Lock()
	lp.init()
	lp.stop()
	for l := range lp.listeners {
		l.Close()
	}
	lp.mu.Unlock()
}

// Shutdown stops accepting connections (Serve returns ErrServerClosed),
// ends the sessions waiting between units of work at once (ShuttingDown:
// a QMTP session between packages, an SMTP one outside a mail
// transaction), lets the others finish the unit under way (a QMQP
// session's one package, a QMTP package, an SMTP transaction) and waits
// for them. If ctx is done first, it cuts them (cancels their context:
// reads fail; replies already owed, QMTP's for the packages received
// completely, are still written; a QMQP session that has not written its
// reply writes none, and its client sends again later), waits until they
// have returned, and returns ctx's error.
func (lp *Loop) Shutdown(ctx context.Context) error {
	lp.beginStop()
	done := make(chan struct{})
	go func() { lp.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		lp.cut()
		<-done
		return ctx.Err()
	}
}

// Close stops accepting connections and cuts every session at once (the
// replies owed are still written, as after a Shutdown that cut), without
// waiting for them to return.
func (lp *Loop) Close() error {
	lp.beginStop()
	lp.cut()
	return nil
}
