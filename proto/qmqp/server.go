package qmqp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
	"unsafe"

	"qbox/netstring"
	"qbox/proto"
)

// Limits bound what a QMQP server accepts. Zero fields take the defaults.
type Limits struct {
	// MaxMessageSize is the largest message accepted, in bytes (default
	// 10 MiB). A message modestly over it is read and thrown away, then
	// answered with D (#5.3.4). One declared beyond DiscardLimit is
	// answered with D at once, before it is read, and the connection
	// closed, as Postfix's qmqpd does: reading gigabytes only to refuse
	// them would hand the client our bandwidth.
	MaxMessageSize int64
	// MaxRecipients is the most recipients in one message (default 10000).
	MaxRecipients int
	// MaxAddress is the longest sender or recipient in bytes (default
	// 1000). Longer addresses, any containing CR, LF or NUL, and the
	// empty recipient are refused (proto.CheckSender, CheckRecipient).
	MaxAddress int
}

// Default limits.
const (
	DefaultMaxMessageSize = 10 << 20
	DefaultMaxRecipients  = 10000
	DefaultMaxAddress     = 1000
)

// WithDefaults returns l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxMessageSize <= 0 {
		l.MaxMessageSize = DefaultMaxMessageSize
	}
	if l.MaxRecipients <= 0 {
		l.MaxRecipients = DefaultMaxRecipients
	}
	if l.MaxAddress <= 0 {
		l.MaxAddress = DefaultMaxAddress
	}
	return l
}

// DiscardLimit is the largest declared message size that is still read
// (and discarded) in order to answer D after the final byte: twice
// MaxMessageSize, and at least MaxMessageSize + 1 MiB.
func (l Limits) DiscardLimit() int64 {
	l = l.WithDefaults()
	return max(2*l.MaxMessageSize, l.MaxMessageSize+1<<20)
}

// maxPackage bounds the outer netstring: the discard limit plus a full
// envelope of maximal addresses.
func (l Limits) maxPackage() int64 {
	item := netstring.Size(int64(l.MaxAddress))
	return netstring.Size(l.DiscardLimit()) + int64(l.MaxRecipients+1)*item
}

// Reply texts, in qmail's style with enhanced status codes (RFC 3463).
var (
	ReplyTooBig       = proto.D("sorry, that message size exceeds my databytes limit (#5.3.4)")
	ReplyBadAddress   = proto.D("sorry, I can't accept addresses like that (#5.1.3)")
	ReplyNoRecipients = proto.D("sorry, no recipients specified (#5.1.3)")
	ReplyTooMany      = proto.D("sorry, too many recipients (#5.5.3)")
	ReplyStoreFailed  = proto.Z("sorry, I can't store the message right now (#4.3.0)")
	// ReplyBusy: the envelope did not fit in what the server's sessions
	// may hold in memory together (Server.Envelopes).
	ReplyBusy = proto.Z("sorry, too many recipients in flight right now, try again later (#4.3.2)")
)

// Server answers QMQP: one package and one reply per connection. The
// backend receives the message as it arrives; nothing reaches it as
// committed unless the whole package was well formed.
type Server struct {
	Backend proto.Backend
	Limits  Limits
	// Timeout bounds each read and each write (idle time); 0 means 60s.
	Timeout time.Duration
	// SessionLimit bounds the whole session; 0 means one hour.
	SessionLimit time.Duration
	// Logger, if set, gets one line per message (the caller logs the
	// connection from the Result).
	Logger *slog.Logger
	// Envelopes, if set, is the memory every session's envelope
	// addresses are taken from (proto.AddressCost each), shared with
	// other servers; a package whose envelope does not fit is read to the
	// end and answered ReplyBusy. nil means unlimited (Limits alone).
	Envelopes *proto.Budget
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
// at once (then proto.Linger keeps the reply from being lost to a reset).
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
// (wrapping ErrProtocol, proto.ErrIdleTimeout, proto.ErrSessionLimit,
// proto.ErrShutdown, or an I/O error).
func (s *Server) ServeConn(ctx context.Context, conn proto.Conn, peer proto.Peer) (Result, error) {
	start := time.Now()
	peer.Protocol = "QMQP"
	peer.Time = start
	tc := proto.NewTimedConn(ctx, conn, s.Timeout, s.SessionLimit)
	defer tc.Close()

	in := serverReaders.Get().(*bufio.Reader)
	in.Reset(tc)
	defer func() {
		in.Reset(nil)
		serverReaders.Put(in)
	}()
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
		proto.Linger(conn)
	}
	return ss.res, nil
}

// Refuse writes an immediate D reply with text (e.g. "not authorized"),
// for access control before anything is read. The caller then closes the
// connection.
func Refuse(w io.Writer, text string) error {
	_, err := w.Write(netstring.Append(nil, proto.D(text).Bytes()))
	return err
}

func (s *Server) logMessage(ss *session, start time.Time, reply string, err error) {
	if s.Logger == nil || ss.res.Size < 0 {
		return // nothing of a message arrived: the connection line says enough
	}
	attrs := []any{
		"proto", "QMQP",
		"remote", ss.peer.RemoteIP,
		"sender", ss.res.Sender,
		"rcpts", ss.res.Recipients,
		"to", proto.LogRecipients(ss.rcpts),
		"size", ss.res.Size,
		"ms", time.Since(start).Milliseconds(),
	}
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
	lim      Limits
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
	c := proto.AddressCost(int(n))
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

// Buffers are pooled: a busy server runs thousands of short sessions.
var serverReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// read parses the package, feeding the backend, and returns the reply to
// send, or an error when no reply is to be sent.
func (ss *session) read() (proto.Reply, error) {
	top := netstring.NewReader(ss.in)
	outer, err := top.Next(ss.lim.maxPackage())
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
	if err := fits(msg, outer, "message"); err != nil {
		return proto.Reply{}, err
	}
	size := msg.Size()
	ss.res.Size = size
	if size > ss.lim.DiscardLimit() {
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
	if err := fits(sb, outer, "sender"); err != nil {
		return proto.Reply{}, err
	}
	sender, senderOK, err := readAddress(sb, ss.lim.MaxAddress, proto.CheckSender)
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
		if err := fits(rb, outer, "recipient"); err != nil {
			return proto.Reply{}, err
		}
		ss.res.Recipients++
		if ss.res.Recipients > ss.lim.MaxRecipients || !ss.take(rb.Size()) {
			if err := rb.Discard(); err != nil {
				return proto.Reply{}, wrapRead("recipient", err)
			}
			continue
		}
		r, ok, err := readAddress(rb, ss.lim.MaxAddress, proto.CheckRecipient)
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
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
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
		return proto.Z(fmt.Sprintf("sorry, internal error: %d replies for %d recipients (#4.3.0)", len(replies), n))
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

// readAddress reads one address netstring, allocating only for an
// acceptable length. ok is false (and the address empty or partial) when
// it is longer than max or check refuses it (CR, LF or NUL; an empty
// recipient): the one check where an address enters, so nothing further
// down ever sees such bytes.
func readAddress(b *netstring.Body, max int, check func(string) error) (addr string, ok bool, err error) {
	if b.Size() > int64(max) {
		return "", false, b.Discard()
	}
	buf := make([]byte, b.Size())
	if _, err := io.ReadFull(b, buf); err != nil {
		return "", false, err
	}
	if err := b.Close(); err != nil {
		return "", false, err
	}
	if len(buf) > 0 {
		// buf is never written again: the string shares it rather than
		// copy it (10,000 recipients per session, --max-conns sessions).
		addr = unsafe.String(&buf[0], len(buf))
	}
	return addr, check(addr) == nil, nil
}

// fits checks, before an item's body is read, that the item (body and
// comma) ends inside the package: the items must fill it exactly.
func fits(item, outer *netstring.Body, what string) error {
	if item.Size() >= outer.Len() {
		return fmt.Errorf("%w: %s of %d bytes overruns the package length", ErrProtocol, what, item.Size())
	}
	return nil
}

// wrapRead labels a read failure: grammar errors wrap ErrProtocol; the
// client going away or timing out keeps its own error.
func wrapRead(what string, err error) error {
	switch {
	case errors.Is(err, netstring.ErrUnexpectedEOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("qmqp: client went away while sending the %s", what)
	case errors.Is(err, netstring.ErrGrammar):
		return fmt.Errorf("%w: %s: %v", ErrProtocol, what, err)
	default:
		return fmt.Errorf("qmqp: reading %s: %w", what, err)
	}
}
