package qmqp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/server"
)

// DiscardLimit is the largest declared message size a QMQP server still
// reads (and discards) in order to answer D after the final byte: twice
// l.MaxMessageSize, and at least MaxMessageSize + 1 MiB. A message
// modestly over MaxMessageSize is read and thrown away, then answered
// with D (#5.3.4); one declared beyond DiscardLimit is answered with D at
// once, before it is read, and the connection closed, as Postfix's qmqpd
// does: reading gigabytes only to refuse them would hand the client our
// bandwidth.
func DiscardLimit(l server.Limits) int64 {
	l = l.WithDefaults()
	return max(2*l.MaxMessageSize, l.MaxMessageSize+1<<20)
}

// maxPackage bounds the outer netstring: the discard limit plus a full
// envelope of maximal addresses.
func maxPackage(l server.Limits) int64 {
	item := netstring.Size(int64(l.MaxAddress))
	return netstring.Size(DiscardLimit(l)) + int64(l.MaxRecipients+1)*item
}

// Reply texts, in qmail's style with enhanced status codes (RFC 3463).
var (
	ReplyTooBig       = server.ReplyTooBig
	ReplyBadAddress   = proto.D("sorry, I can't accept addresses like that (#5.1.3)")
	ReplyNoRecipients = proto.D("sorry, no recipients specified (#5.1.3)")
	ReplyTooMany      = proto.D("sorry, too many recipients (#5.5.3)")
	ReplyStoreFailed  = server.ReplyStoreFailed
	// ReplyBusy: the envelope did not fit in what the server's sessions
	// may hold in memory together (Server.Envelopes).
	ReplyBusy = proto.Z("sorry, too many recipients in flight right now, try again later (#4.3.2)")
)

// Server answers QMQP: one package and one reply per connection. The
// backend receives the message as it arrives; nothing reaches it as
// committed unless the whole package was well formed.
//
// Serve runs it on a listener; ServeConn runs one session on a connection
// the caller accepted and checked, HandleConn one with the access check
// and log line (stdin and stdout under tcpserver or inetd).
type Server struct {
	Backend proto.Backend
	// Limits bound what is accepted; see ServeConn and DiscardLimit for
	// what a client beyond them gets.
	Limits server.Limits
	// Envelopes, if set, is the memory every session's envelope
	// addresses are taken from (server.AddressCost each), shared with
	// other servers; a package whose envelope does not fit is read to the
	// end and answered ReplyBusy. nil means unlimited (Limits alone).
	Envelopes *server.Budget
	// Timeout bounds each read and each write (idle time); 0 means 60s.
	Timeout time.Duration
	// SessionLimit bounds the whole session; 0 means one hour.
	SessionLimit time.Duration
	// Logger, if set, gets one line per message, and under Serve and
	// HandleConn one per connection that carried none (refused, broken,
	// too many connections), and the accept loop's failures.
	Logger *slog.Logger

	// Hostname is this server's name (proto.Peer.LocalHost, for the
	// store's Received line) for connections Serve accepts.
	Hostname string

	// Loop is the server's lifecycle, which gives it Allow (the client
	// networks served), Conns (the connection limit), Shutdown and Close:
	// Shutdown lets the sessions finish their package (when its ctx is
	// done first, a session that has not written its reply writes none:
	// the client sends again later); Close cuts them at once.
	server.Loop
}

// Result summarises one session for the caller's log line.
type Result struct {
	Sender     string      // as sent (valid only once it was read)
	Recipients int         // recipients sent, counting refused ones
	Size       int64       // declared message size; -1 if never read
	Reply      proto.Reply // the reply sent, if Replied
	Replied    bool
}

// ErrProtocol is wrapped by the error ServeConn returns when the client
// broke the QMQP grammar (malformed netstrings, items not filling the
// outer length, no message or sender).
var ErrProtocol = errors.New("qmqp: protocol violation")

// ServeConn handles exactly one QMQP package on conn and writes exactly
// one reply, or none if the client went away or broke the protocol (the
// client then sees a temporary failure, as the spec says). The reply is
// never written before the package's final byte, the outer comma, with one
// exception: a declared size beyond Limits.DiscardLimit is refused with D
// at once (then server.Linger keeps the reply from being lost to a reset).
// The caller closes conn.
//
// Backend.Begin is called once the message's netstring header is read,
// with the declared size; the body is written to the Delivery as it
// arrives; Commit is called only after the final byte, and its
// per-recipient replies are combined into QMQP's single reply: all K gives
// the first K, otherwise the first D, otherwise the first Z. A package
// with zero recipients is answered D, never K (qmail-qmqpd's K tells the
// client its mail is on its way when it goes nowhere). On any failure the
// delivery is Aborted.
//
// peer.Protocol is set to "QMQP" and peer.Time to the session's start.
// The error is nil when a reply was written; otherwise it says why not
// (wrapping ErrProtocol, server.ErrIdleTimeout, server.ErrSessionLimit,
// server.ErrShutdown, or an I/O error).
func (s *Server) ServeConn(ctx context.Context, conn server.Conn, peer proto.Peer) (Result, error) {
	start := time.Now()
	peer.Protocol = "QMQP"
	peer.Time = start
	tc := server.NewTimedConn(ctx, conn, s.Timeout, s.SessionLimit)
	defer tc.Close()

	in := server.GetReader(tc)
	defer server.PutReader(in)
	ss := &session{
		srv:  s,
		ctx:  ctx,
		lim:  s.Limits.WithDefaults(),
		peer: peer,
		in:   in,
		res:  Result{Size: -1},
	}
	reply, err := ss.read()
	// The envelope is Committed (or dropped) by now: its memory is free.
	s.Envelopes.Give(ss.held)
	if ss.delivery != nil {
		// Still open: the package failed before Commit.
		ss.delivery.Abort()
	}
	if err != nil {
		s.logMessage(ss, start, "", err)
		return ss.res, err
	}
	ss.res.Reply = reply
	if _, err := tc.Write(netstring.Append(nil, reply.Bytes())); err != nil {
		err = fmt.Errorf("qmqp: writing reply: %w", err)
		s.logMessage(ss, start, reply.String(), err)
		return ss.res, err
	}
	ss.res.Replied = true
	s.logMessage(ss, start, reply.String(), nil)
	if ss.early {
		// The client is still sending: let it see the reply rather than a
		// reset.
		server.Linger(conn)
	}
	return ss.res, nil
}

// Serve accepts connections on l and serves each in its own goroutine:
// a client outside Allow gets an immediate D; beyond Conns the connection
// waits for a slot in Conns' waiting room, in order, briefly, and is
// otherwise closed without a reply; each session is
// ServeConn's, logged. Serve returns server.ErrServerClosed after Shutdown
// or Close, another error only if l fails for good; it closes l.
func (s *Server) Serve(l net.Listener) error { return s.Loop.Serve(l, s.config()) }

// HandleConn serves one connection accepted elsewhere (stdin and stdout
// under tcpserver or inetd) as Serve serves each: a peer.RemoteIP outside
// Allow gets an immediate D (an empty one, a local pipe, is served), then
// ServeConn under ctx and the connection's log line. No slot of Conns is
// taken. peer.LocalHost empty means Hostname. The caller closes conn.
func (s *Server) HandleConn(ctx context.Context, conn server.Conn, peer proto.Peer) {
	s.Loop.HandleConn(ctx, conn, peer, s.config())
}

// config is what the Loop needs of this server.
func (s *Server) config() *server.Config {
	return &server.Config{Protocol: "QMQP", Refuse: server.RefuseNetstring, Session: s.session,
		Timeout: s.Timeout, Hostname: s.Hostname, Logger: s.Logger}
}

// session runs ServeConn. The connection line is written only when no
// message line was (one connection carries one message, and one event is
// one line). When a reply went out the client has sent its whole package
// (ServeConn lingered itself after an early one, a refused size), so the
// loop lingers only if the client sent more all the same.
func (s *Server) session(ctx context.Context, c server.Conn, peer proto.Peer) server.Outcome {
	res, err := s.ServeConn(ctx, c, peer)
	o := server.Outcome{LingerIfUnread: res.Replied, Err: err, Logged: err == nil && res.Size >= 0}
	if res.Replied && !o.Logged {
		o.Attrs = []any{"reply", proto.Printable(res.Reply.String(), 200)}
	}
	return o
}

func (s *Server) logMessage(ss *session, start time.Time, reply string, err error) {
	if s.Logger == nil || ss.res.Size < 0 {
		return // nothing of a message arrived: the connection line says enough
	}
	attrs := make([]any, 0, 18) // room for reply and err
	attrs = append(attrs,
		"proto", "QMQP",
		"remote", ss.peer.RemoteIP,
		"sender", ss.res.Sender,
		"recipients", ss.res.Recipients,
		"to", proto.LogRecipients(ss.rcpts),
		"size", ss.res.Size,
		"ms", time.Since(start).Milliseconds(),
	)
	if err != nil {
		s.Logger.Warn("qmqp message not accepted", append(attrs, "reply", reply, "err", err.Error())...)
		return
	}
	s.Logger.Info("qmqp message", append(attrs, "reply", reply)...)
}

// session is the state of one package being read.
type session struct {
	srv      *Server
	ctx      context.Context
	lim      server.Limits
	peer     proto.Peer
	in       *bufio.Reader
	res      Result
	delivery proto.Delivery // open between Begin and Commit/Abort
	rcpts    []string       // as read, for Commit and the log line
	early    bool           // replying before the final byte (far too big)
	held     int64          // taken from srv.Envelopes
	busy     bool           // the envelope did not fit in srv.Envelopes
}

// take charges one address of n bytes to the server's envelope budget.
func (ss *session) take(n int64) bool {
	if ss.busy {
		return false
	}
	c := server.AddressCost(int(n))
	if !ss.srv.Envelopes.Take(c) {
		// The package gets Z whatever follows: give back what it
		// holds at once, so the sessions that can finish do, rather
		// than every session holding a part and none a whole.
		ss.busy = true
		ss.srv.Envelopes.Give(ss.held)
		ss.held = 0
		ss.rcpts = append([]string(nil), ss.rcpts[:min(len(ss.rcpts), 10)]...) // for the log line
		return false
	}
	ss.held += c
	return true
}

// read parses the package, feeding the backend, and returns the reply to
// send, or an error when no reply is to be sent.
func (ss *session) read() (proto.Reply, error) {
	top := netstring.NewReader(ss.in)
	outer, err := top.Next(maxPackage(ss.lim))
	switch {
	case errors.Is(err, netstring.ErrTooLong):
		ss.early = true
		return ReplyTooBig, nil
	case err == io.EOF:
		return proto.Reply{}, errors.New("qmqp: client closed the connection without sending")
	case err != nil:
		return proto.Reply{}, wrapRead("package length", err)
	}
	items := netstring.NewReader(outer)

	// The message.
	msg, err := items.Next(outer.Len())
	if err == io.EOF {
		return proto.Reply{}, fmt.Errorf("%w: empty package", ErrProtocol)
	}
	if err != nil {
		return proto.Reply{}, wrapRead("message length", err)
	}
	size := msg.Size()
	ss.res.Size = size
	if size > DiscardLimit(ss.lim) {
		ss.early = true
		return ReplyTooBig, nil
	}
	var storeErr error
	tooBig := size > ss.lim.MaxMessageSize
	if !tooBig {
		d, err := ss.srv.Backend.Begin(ss.ctx, ss.peer, size)
		if err != nil {
			storeErr = err
		} else {
			ss.delivery = d
		}
	}
	if err := ss.copyMessage(msg, &storeErr); err != nil {
		return proto.Reply{}, wrapRead("message", err)
	}

	// The sender.
	sb, err := items.Next(outer.Len())
	if err == io.EOF {
		return proto.Reply{}, fmt.Errorf("%w: package ends before the sender", ErrProtocol)
	}
	if err != nil {
		return proto.Reply{}, wrapRead("sender", err)
	}
	sender, senderOK, err := server.ReadAddress(sb, ss.lim.MaxAddress, proto.CheckSender)
	if err != nil {
		return proto.Reply{}, wrapRead("sender", err)
	}
	ss.res.Sender = sender

	// The recipients, up to the outer comma.
	rcptsOK := true
	for {
		rb, err := items.Next(outer.Len())
		if err == io.EOF {
			break // the outer comma has been read: the package is complete
		}
		if err != nil {
			return proto.Reply{}, wrapRead("recipient", err)
		}
		ss.res.Recipients++
		if ss.res.Recipients > ss.lim.MaxRecipients || !ss.take(rb.Size()) {
			if err := rb.Discard(); err != nil {
				return proto.Reply{}, wrapRead("recipient", err)
			}
			continue
		}
		r, ok, err := server.ReadAddress(rb, ss.lim.MaxAddress, proto.CheckRecipient)
		if err != nil {
			return proto.Reply{}, wrapRead("recipient", err)
		}
		rcptsOK = rcptsOK && ok
		ss.rcpts = append(ss.rcpts, r)
	}
	rcpts := ss.rcpts

	switch {
	case tooBig:
		return ReplyTooBig, nil
	case !senderOK || !rcptsOK:
		return ReplyBadAddress, nil
	case ss.res.Recipients == 0:
		return ReplyNoRecipients, nil
	case ss.res.Recipients > ss.lim.MaxRecipients:
		return ReplyTooMany, nil
	case ss.busy:
		return ReplyBusy, nil
	case storeErr != nil:
		ss.logStoreError(storeErr)
		return ReplyStoreFailed, nil
	}
	d := ss.delivery
	ss.delivery = nil
	replies := d.Commit(ss.ctx, proto.Envelope{Sender: sender, Recipients: rcpts})
	return combine(replies, len(rcpts)), nil
}

// copyMessage streams the message body into the delivery (if any). A
// backend write error is recorded in *storeErr and the rest is discarded,
// so the reply can still wait for the final byte; a read error is
// returned.
func (ss *session) copyMessage(msg *netstring.Body, storeErr *error) error {
	bp := server.GetCopyBuf()
	defer server.PutCopyBuf(bp)
	buf := *bp
	for {
		n, err := msg.Read(buf)
		if n > 0 && ss.delivery != nil {
			if _, werr := ss.delivery.Write(buf[:n]); werr != nil {
				ss.delivery.Abort()
				ss.delivery = nil
				*storeErr = werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (ss *session) logStoreError(err error) {
	if ss.srv.Logger != nil {
		ss.srv.Logger.Error("qmqp backend failed", "remote", ss.peer.RemoteIP, "err", err.Error())
	}
}

// combine folds per-recipient replies into QMQP's one reply.
func combine(replies []proto.Reply, n int) proto.Reply {
	if len(replies) != n || n == 0 {
		return proto.MiscountedReplies(len(replies), n)
	}
	var firstZ *proto.Reply
	for i := range replies {
		switch replies[i].Status {
		case proto.Permanent:
			return replies[i]
		case proto.OK:
		default:
			if firstZ == nil {
				firstZ = &replies[i]
			}
		}
	}
	if firstZ != nil {
		return *firstZ
	}
	return replies[0]
}

// wrapRead labels a read failure: grammar errors (an item overrunning
// the package among them: the netstring reader refuses it before reading
// its body) wrap ErrProtocol.
func wrapRead(what string, err error) error {
	return server.ReadError("qmqp", ErrProtocol, what, err)
}
