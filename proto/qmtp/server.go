package qmtp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/server"
)

// DefaultParallel is Server.Parallel's default: enough commits at once
// for a store's syncs to be shared, few enough that a session's
// deliveries stay cheap (see serverMaxInFlightBytes). A session's rate is
// at most Parallel over one commit's time (two syncs of the disk): one
// flush-maildir into serve's maildir on a 2-core virtual machine reached
// about 5,000 messages a second with 16 and 7,000 with 64, as many as the
// store's group commit takes at once (maildir.MaxGroup).
const DefaultParallel = 64

// serverMaxDeclared bounds a message netstring's length field. Anything longer
// is not a message but an attack on the length parser; it is a protocol
// error.
const serverMaxDeclared = 1 << 40

// maxSender bounds the sender netstring: an over-long sender is still
// read (to answer D for each recipient) up to this, beyond it the package
// is a protocol error.
func maxSender(l server.Limits) int64 { return max(64<<10, 4*int64(l.MaxAddress)) }

// maxRecipientList bounds the recipient list netstring: twice a full list
// of maximal addresses.
func maxRecipientList(l server.Limits) int64 {
	return 2 * int64(l.MaxRecipients+1) * netstring.Size(int64(l.MaxAddress))
}

// Reply texts, in qmail's style with enhanced status codes (RFC 3463).
var (
	ReplyTooBig       = server.ReplyTooBig
	ReplyBadSender    = proto.D("unacceptable sender (#5.1.7)")
	ReplyBadRecipient = proto.D("sorry, I can't handle that recipient (#5.1.3)")
	// ReplyRelayDenied is for a recipient RecipientAllowed refuses, in
	// qmail-qmtpd's words.
	ReplyRelayDenied = proto.D("sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
	ReplyTooMany     = proto.Z("sorry, too many recipients in one package, send the rest later (#4.5.3)")
	ReplyStoreFailed = server.ReplyStoreFailed
)

// ErrProtocol is wrapped by the error ServeConn returns when the client
// broke the QMTP grammar: malformed netstrings, an empty message or one
// whose first byte is neither LF nor CR, recipient items not filling the
// list, or an empty recipient list.
var ErrProtocol = errors.New("qmtp: protocol violation")

// Server answers QMTP: many packages per connection, pipelined, one reply
// per recipient.
//
// Serve runs it on a listener; ServeConn runs one session on a connection
// the caller accepted and checked, HandleConn one with the access check
// and log line (stdin and stdout under tcpserver or inetd).
type Server struct {
	Backend proto.Backend
	// Limits bound what is accepted. A message over MaxMessageSize (after
	// line-end conversion) is read and discarded, then every recipient
	// gets D (#5.3.4); recipients beyond MaxRecipients get Z (#4.5.3) and
	// come again later; a bad sender gets D for every recipient, a bad
	// recipient its own D.
	Limits server.Limits
	// Timeout bounds each read and each write (idle time); 0 means 60s.
	Timeout time.Duration
	// SessionLimit bounds the whole session; 0 means one hour. Replies
	// already owed are still written when it expires.
	SessionLimit time.Duration
	// Logger, if set, gets one line per message, and under Serve and
	// HandleConn one per connection and the accept loop's failures.
	Logger *slog.Logger
	// Stopping, once closed, ends every session at its next package
	// boundary (nothing of a new package read yet), cleanly: a client
	// that keeps its connection open between batches does not hold up a
	// stop, and no package under way is cut. Shutdown does the same for
	// the sessions Serve runs.
	Stopping <-chan struct{}
	// RecipientAllowed, if set, decides per recipient whether this client
	// may send to it (qmail's rcpthosts and RELAYCLIENT); a refused one
	// gets ReplyRelayDenied.
	RecipientAllowed func(remoteIP, rcpt string) bool
	// RelayClient, if set, is asked for each package whether the
	// session's client may send past RecipientAllowed to any domain
	// (serve: a TLS client certificate verified against --tls-client-ca,
	// as s/qmail's QMTPS). conn is the connection the session was given.
	RelayClient func(conn server.Conn) bool
	// Parallel is how many packages of one session are committed at
	// once while the session reads on; 0 means DefaultParallel, 1 commits
	// each package before reading the next, as qmail-qmtpd does (for a
	// backend whose deliveries each cost a process, say).
	Parallel int
	// Envelopes, if set, is the memory every session's recipient
	// addresses are taken from (server.AddressCost each), shared with
	// other servers; recipients that do not fit get ReplyTooMany (Z) and
	// come again in a later package. nil means unlimited (Limits alone).
	Envelopes *server.Budget

	// Hostname is this server's name (proto.Peer.LocalHost, for the
	// store's Received line) for connections Serve accepts.
	Hostname string

	// Loop is the server's lifecycle, which gives it Allow (the client
	// networks served), Conns (the connection limit), Shutdown and Close:
	// Shutdown ends the sessions waiting between packages at once (as
	// Stopping does) and lets the others finish the package under way;
	// when its ctx is done first, or on Close, each session still writes
	// every reply it owes for the packages it received completely (ctx cut
	// short, a commit gives Z).
	server.Loop
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

// Result summarises one session for the caller's log line.
type Result struct {
	Packages int   // packages received completely and answered
	Accepted int   // recipient replies sent, by status
	Deferred int   //
	Rejected int   //
	Bytes    int64 // message bytes received (after conversion)
}

// ServeConn serves QMTP packages on conn until the client closes its
// side, breaks the protocol, idles past Timeout or outlasts SessionLimit,
// or ctx is cancelled. Every reply owed for a package received completely
// is written before it returns, whatever the reason, as far as the client
// reads them; when the session ends on an error, server.Linger then keeps a
// reset from destroying them. The caller closes conn.
//
// For each package Backend.Begin is called once the message's first byte
// (the line-end mode) is read, with the declared length minus that byte
// (in CR mode an upper bound: CR LF pairs become LF); the converted body
// is written to the Delivery as it arrives; Commit is called with the
// acceptable recipients after the package's final byte, from its own
// goroutine: the session reads on meanwhile, so up to Parallel Commits
// of one session run at once, and Begin of a later package may
// come before Commit of an earlier one returns. Replies still go out in
// package order. A package in which no recipient is acceptable is
// Aborted, as is one cut short.
//
// peer.Protocol is set to "QMTP" and peer.Time to each package's start.
// The error is nil when the client closed the connection between
// packages; otherwise it says why the session ended (wrapping
// ErrProtocol, server.ErrIdleTimeout, server.ErrSessionLimit,
// server.ErrShutdown, or an I/O error).
func (s *Server) ServeConn(ctx context.Context, conn server.Conn, peer proto.Peer) (Result, error) {
	peer.Protocol = "QMTP"
	tc := server.NewTimedConn(ctx, conn, s.Timeout, s.SessionLimit)
	defer tc.Close()
	if s.Stopping != nil {
		tc.DrainOn(s.Stopping)
	}
	tc.DrainOn(s.Loop.ShuttingDown())
	out := serverWriters.Get().(*bufio.Writer)
	out.Reset(tc)
	in := server.GetReader(nil)
	defer func() {
		out.Reset(nil)
		serverWriters.Put(out)
		server.PutReader(in)
	}()
	ss := &serverSession{
		srv:  s,
		ctx:  ctx,
		lim:  s.Limits.WithDefaults(),
		peer: peer,
		conn: conn,
	}
	rp := &serverReplier{
		out:   out,
		nw:    netstring.NewWriter(out),
		queue: make(chan *serverPackage, serverMaxUnanswered),
		done:  make(chan struct{}),

		envelopes: s.Envelopes,
		parallel:  s.Parallel,
	}
	if rp.parallel <= 0 {
		rp.parallel = DefaultParallel
	}
	rp.room = sync.NewCond(&rp.mu)
	if s.Logger != nil {
		rp.log = ss.logMessage
	}
	ss.replier = rp
	server.Go(rp.run)
	in.Reset(&serverCheckedReader{r: tc, rp: rp})
	ss.in = in
	ss.top = netstring.NewReader(ss.in)

	var err error
	drained := false
	for {
		if ctx.Err() != nil {
			err = fmt.Errorf("qmtp: %w: %v", server.ErrShutdown, ctx.Err())
			break
		}
		// Read on only while the packages still being committed or
		// answered leave room (Parallel and the bounds below).
		rp.waitForRoom()
		if ss.in.Buffered() == 0 {
			// Between packages: a stopping server may end here. (The
			// replier answers the packages read so far meanwhile.)
			tc.AtBoundary(true)
			_, perr := ss.in.Peek(1)
			tc.AtBoundary(false)
			if errors.Is(perr, server.ErrDrained) {
				// A next package may be on its way: closing on it
				// unread would reset the connection and could destroy
				// the replies just written.
				drained = true
				break
			}
			if perr != nil {
				if err = perr; err != io.EOF {
					err = serverReadError("message length", perr)
				}
				break
			}
		}
		err = ss.onePackage()
		if ss.delivery != nil {
			ss.delivery.Abort()
			ss.delivery = nil
		}
		if err != nil {
			break
		}
	}
	if err == io.EOF {
		err = nil
	}
	// Every package whose final byte was read is answered, whatever
	// ended the session: its commit finishes (ctx cut short gives Z) and
	// its replies are written.
	close(rp.queue)
	<-rp.done
	if rp.err != nil && err == nil {
		err = fmt.Errorf("qmtp: writing replies: %w", rp.err)
	}
	ss.res.Packages = rp.res.Packages
	ss.res.Accepted, ss.res.Deferred, ss.res.Rejected = rp.res.Accepted, rp.res.Deferred, rp.res.Rejected
	if err != nil || drained {
		// The client may still be sending (pipelined packages after a
		// broken one): closing on unread input resets the connection,
		// which can destroy the replies just flushed.
		server.Linger(conn)
	}
	return ss.res, err
}

// config is what the Loop needs of this server.
func (s *Server) config() *server.Config {
	return &server.Config{Protocol: "QMTP", Refuse: server.RefuseNetstring, Session: s.session,
		Timeout: s.Timeout, Hostname: s.Hostname, Logger: s.Logger}
}

// session runs ServeConn for the Loop, which logs the connection line.
// ServeConn lingers itself where replies could be lost.
func (s *Server) session(ctx context.Context, c server.Conn, peer proto.Peer) server.Outcome {
	res, err := s.ServeConn(ctx, c, peer)
	return server.Outcome{Err: err, Attrs: []any{"packages", res.Packages, "accepted", res.Accepted,
		"deferred", res.Deferred, "rejected", res.Rejected, "bytes", res.Bytes}}
}

// serverCheckedReader ends the reading of a session whose replies can no
// longer be written: messages read on would be stored without the client
// ever learning it, and sent again.
type serverCheckedReader struct {
	r  io.Reader
	rp *serverReplier
}

func (c *serverCheckedReader) Read(p []byte) (int, error) {
	if err := c.rp.writeErr(); err != nil {
		return 0, fmt.Errorf("writing replies: %w", err)
	}
	return c.r.Read(p)
}

// A session commits up to Server.Parallel packages at once (the store
// fsyncs them together instead of one after another) while it reads the
// next ones; their replies still go out in package order. What the
// packages in flight hold in memory is bounded too: each is charged its
// message size up to serverChargeCap (a store keeps at most about that
// much of a message in memory, the rest in a spool file) until its
// commit returns, and a session reads no further package while the
// charges reach serverMaxInFlightBytes. A commit that returns early does
// not wait for the ones before it to free its place, but at most
// serverMaxUnanswered packages wait for their replies to be written;
// their envelope addresses stay charged to Server.Envelopes until then.
const (
	serverMaxInFlightBytes = 256 << 10
	serverChargeCap        = 64 << 10
	serverMaxUnanswered    = 4 * DefaultParallel
)

// serverPackage is one package read completely, on its way to the client
// as replies.
type serverPackage struct {
	// done is closed once replies are final (the commit returned); nil
	// when they were final without a commit.
	done     chan struct{}
	replies  []proto.Reply
	excess   int   // recipients beyond the limits: ReplyTooMany each
	charge   int64 // against serverMaxInFlightBytes while committing
	envelope int64 // taken from Server.Envelopes, given back once answered

	// For the log line.
	start  time.Time
	sender string
	n      int
	rcpts  []serverRcpt
	size   int64
}

// serverReplier writes the replies of a session's packages in package
// order, each package's once its commit has returned. It owns out.
type serverReplier struct {
	out   *bufio.Writer
	nw    *netstring.Writer
	queue chan *serverPackage
	done  chan struct{} // closed when run returns
	res   Result        // Packages and reply counts; read after done
	log   func(*serverPackage)
	// envelopes gets back each package's envelope once it is answered.
	envelopes *server.Budget
	parallel  int // commits at once

	mu         sync.Mutex
	room       *sync.Cond // signalled as packages leave the flight
	committing int        // commits not returned yet
	bytes      int64      // their charges
	unanswered int        // packages whose replies are not written yet
	err        error      // the first write error: later replies are dropped
}

// waitForRoom blocks while the packages in flight are at their bounds.
// They always leave: each commit returns (ctx cuts a slow one short) and
// a blocked write fails after the idle timeout.
func (rp *serverReplier) waitForRoom() {
	rp.mu.Lock()
	for rp.committing >= rp.parallel || rp.bytes >= serverMaxInFlightBytes || rp.unanswered >= serverMaxUnanswered {
		rp.room.Wait()
	}
	rp.mu.Unlock()
}

// add puts p in flight, behind every package read before it; p.done set
// means a commit is under way, which calls committed when it returns.
func (rp *serverReplier) add(p *serverPackage) {
	rp.mu.Lock()
	if p.done != nil {
		rp.committing++
		rp.bytes += p.charge
	}
	rp.unanswered++
	rp.mu.Unlock()
	rp.queue <- p // never blocks: waitForRoom keeps fewer than cap unanswered
}

// committed is called when p's commit has returned, before p.done is
// closed: what the delivery held is released.
func (rp *serverReplier) committed(p *serverPackage) {
	rp.mu.Lock()
	rp.committing--
	rp.bytes -= p.charge
	rp.room.Signal()
	rp.mu.Unlock()
}

// waitIdle waits until every package in flight has been answered (their
// commits done, their envelopes given back).
func (rp *serverReplier) waitIdle() {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	for rp.unanswered > 0 {
		rp.room.Wait()
	}
}

func (rp *serverReplier) writeErr() error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.err
}

// run answers the queued packages in order. Replies wait in out while the
// next package's are ready too; whenever run would wait (for a commit or
// for a package), what it has goes out first.
func (rp *serverReplier) run() {
	defer close(rp.done)
	for {
		var p *serverPackage
		var ok bool
		select {
		case p, ok = <-rp.queue:
		default:
			rp.flush()
			p, ok = <-rp.queue
		}
		if !ok {
			rp.flush()
			return
		}
		if p.done != nil {
			select {
			case <-p.done:
			default:
				rp.flush()
				<-p.done
			}
		}
		for _, r := range p.replies {
			rp.write(r)
		}
		for range p.excess {
			rp.write(ReplyTooMany)
		}
		rp.res.Packages++
		if rp.log != nil {
			rp.log(p)
		}
		rp.envelopes.Give(p.envelope)
		rp.mu.Lock()
		rp.unanswered--
		rp.room.Signal()
		rp.mu.Unlock()
	}
}

// write buffers one reply netstring.
func (rp *serverReplier) write(r proto.Reply) {
	switch r.Status {
	case proto.OK:
		rp.res.Accepted++
	case proto.Permanent:
		rp.res.Rejected++
	default:
		rp.res.Deferred++
	}
	if rp.writeErr() != nil {
		return
	}
	rp.nw.WriteHeader(int64(1 + len(r.Text)))
	rp.out.WriteByte(byte(r.Status))
	rp.out.WriteString(r.Text)
	rp.out.WriteByte(',')
}

func (rp *serverReplier) flush() {
	if rp.out.Buffered() == 0 || rp.writeErr() != nil {
		return
	}
	if err := rp.out.Flush(); err != nil {
		rp.mu.Lock()
		rp.err = err
		rp.mu.Unlock()
	}
}

type serverSession struct {
	srv      *Server
	ctx      context.Context
	lim      server.Limits
	peer     proto.Peer
	in       *bufio.Reader
	top      *netstring.Reader
	replier  *serverReplier
	res      Result         // Bytes; the replier counts the rest
	delivery proto.Delivery // open between Begin and Commit/Abort
	conn     server.Conn    // as given to ServeConn, for RelayClient
}

// Reply writers are pooled: a busy server runs many sessions.
var serverWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// rcpt is one recipient as sent; only acceptable ones are delivered.
type serverRcpt struct {
	addr string
	ok   bool
}

// onePackage reads one package and queues its replies. It returns io.EOF
// at a clean end of input before a package.
func (ss *serverSession) onePackage() error {
	msg, err := ss.top.Next(serverMaxDeclared)
	if err == io.EOF {
		return io.EOF
	}
	start := time.Now()
	ss.peer.Time = start
	if err != nil {
		return serverReadError("message length", err)
	}
	if msg.Size() == 0 {
		return fmt.Errorf("%w: empty message netstring", ErrProtocol)
	}
	mode, err := msg.ReadByte()
	if err != nil {
		return serverReadError("message", err)
	}
	if mode != '\n' && mode != '\r' {
		return fmt.Errorf("%w: message starts with %q, not LF or CR", ErrProtocol, mode)
	}
	declared := msg.Size() - 1
	tooBig := mode == '\n' && declared > ss.lim.MaxMessageSize
	var storeErr error
	if !tooBig {
		d, err := ss.srv.Backend.Begin(ss.ctx, ss.peer, declared)
		if err != nil {
			storeErr = err
		} else {
			ss.delivery = d
		}
	}
	size, err := ss.copyMessage(msg, mode == '\r', &storeErr)
	if err != nil {
		return serverReadError("message", err)
	}
	ss.res.Bytes += size
	if size > ss.lim.MaxMessageSize {
		tooBig = true
	}

	// The sender.
	sb, err := ss.top.Next(maxSender(ss.lim))
	if err != nil {
		return serverReadError("sender", err)
	}
	sender, senderOK, err := server.ReadAddress(sb, ss.lim.MaxAddress, proto.CheckSender)
	if err != nil {
		return serverReadError("sender", err)
	}

	// The recipient list: a netstring of netstrings that must fill it.
	list, err := ss.top.Next(maxRecipientList(ss.lim))
	if err != nil {
		return serverReadError("recipient list", err)
	}
	items := netstring.NewReader(list)
	var rcpts []serverRcpt
	n := 0 // recipients sent; those past MaxRecipients or the budget are not kept
	var held int64
	defer func() { ss.srv.Envelopes.Give(held) }()
	full := false // the budget refused one: keep none after it, replies stay in order
	for {
		rb, err := items.Next(list.Len())
		if err == io.EOF {
			break // the list's comma was read: the package is complete
		}
		if err != nil {
			return serverReadError("recipient", err)
		}
		n++
		if !full && n <= ss.lim.MaxRecipients {
			c := server.AddressCost(int(rb.Size()))
			took := ss.srv.Envelopes.Take(c)
			if !took {
				// This session's own packages in flight may hold
				// what is missing: pipelining must not earn a Z
				// that sending them one by one would not. (Try
				// again even if none is in flight any more: the
				// last may have given its share back since.)
				ss.replier.waitIdle()
				took = ss.srv.Envelopes.Take(c)
			}
			if took {
				held += c
			} else {
				full = true
			}
		}
		if n > ss.lim.MaxRecipients || full {
			if err := rb.Discard(); err != nil {
				return serverReadError("recipient", err)
			}
			continue
		}
		addr, ok, err := server.ReadAddress(rb, ss.lim.MaxAddress, proto.CheckRecipient)
		if err != nil {
			return serverReadError("recipient", err)
		}
		rcpts = append(rcpts, serverRcpt{addr, ok})
	}
	if n == 0 {
		return fmt.Errorf("%w: package with no recipients", ErrProtocol)
	}

	// Decide every recipient's reply, in order.
	replies := make([]proto.Reply, len(rcpts))
	var valid []string
	relayClient := ss.srv.RecipientAllowed != nil && ss.srv.RelayClient != nil && ss.srv.RelayClient(ss.conn)
	for i, r := range rcpts {
		switch {
		case tooBig:
			replies[i] = ReplyTooBig
		case !senderOK:
			replies[i] = ReplyBadSender
		case !r.ok:
			replies[i] = ReplyBadRecipient
		case ss.srv.RecipientAllowed != nil && !relayClient && !ss.srv.RecipientAllowed(ss.peer.RemoteIP, r.addr):
			replies[i] = ReplyRelayDenied
		case storeErr != nil:
			replies[i] = ReplyStoreFailed
		default:
			valid = append(valid, r.addr)
		}
	}
	if storeErr != nil && len(valid) == 0 && !tooBig && senderOK {
		ss.logStoreError(storeErr)
	}
	p := &serverPackage{
		replies: replies,
		excess:  n - len(rcpts),
		charge:  min(size, serverChargeCap),
		start:   start,
		sender:  sender,
		n:       n,
		rcpts:   rcpts,
		size:    size,
	}
	// The addresses live on in p until it is answered: the replier gives
	// them back.
	p.envelope, held = held, 0
	if len(valid) == 0 {
		ss.replier.add(p) // the delivery, if any, is Aborted by the caller
		return nil
	}
	// Committed while the session reads on; the replier waits for it, so
	// replies keep package order and each K still comes only once the
	// store has made the message durable.
	d := ss.delivery
	ss.delivery = nil
	p.done = make(chan struct{})
	ss.replier.add(p)
	env := proto.Envelope{Sender: sender, Recipients: valid}
	server.Go(func() {
		got := d.Commit(ss.ctx, env)
		j := 0
		for i := range replies {
			if replies[i].Status != 0 {
				continue
			}
			if len(got) == len(valid) {
				replies[i] = got[j]
			} else {
				replies[i] = proto.MiscountedReplies(len(got), len(valid))
			}
			j++
		}
		ss.replier.committed(p)
		close(p.done)
	})
	return nil
}

// copyMessage streams the body (after the mode byte) into the delivery,
// converting CR LF to LF in CR mode, and returns the converted size. Past
// MaxMessageSize, or after a backend write error (recorded in *storeErr),
// the delivery is aborted and the rest only read.
func (ss *serverSession) copyMessage(msg *netstring.Body, crMode bool, storeErr *error) (int64, error) {
	bp := server.GetCopyBuf()
	defer server.PutCopyBuf(bp)
	buf := *bp
	var conv []byte
	var pendingCR bool
	var size int64
	emit := func(p []byte) {
		size += int64(len(p))
		if ss.delivery == nil {
			return
		}
		if size > ss.lim.MaxMessageSize {
			ss.delivery.Abort()
			ss.delivery = nil
			return
		}
		if _, err := ss.delivery.Write(p); err != nil {
			ss.delivery.Abort()
			ss.delivery = nil
			*storeErr = err
		}
	}
	for {
		n, err := msg.Read(buf)
		if n > 0 {
			if crMode {
				conv, pendingCR = server.AppendCRLFToLF(conv[:0], buf[:n], pendingCR)
				emit(conv)
			} else {
				emit(buf[:n])
			}
		}
		if err == io.EOF {
			if pendingCR {
				emit([]byte{'\r'}) // a lone CR at the very end is kept
			}
			return size, nil
		}
		if err != nil {
			return size, err
		}
	}
}

func (ss *serverSession) logStoreError(err error) {
	if ss.srv.Logger != nil {
		ss.srv.Logger.Error("qmtp backend failed", "remote", ss.peer.RemoteIP, "err", err.Error())
	}
}

// logMessage logs one answered package; the replier calls it, in
// package order.
func (ss *serverSession) logMessage(p *serverPackage) {
	start, sender, n, rcpts, size, replies, excess := p.start, p.sender, p.n, p.rcpts, p.size, p.replies, p.excess
	to := make([]string, len(rcpts))
	for i, r := range rcpts {
		to[i] = r.addr
	}
	var k, z, d int
	for _, r := range replies {
		switch r.Status {
		case proto.OK:
			k++
		case proto.Permanent:
			d++
		default:
			z++
		}
	}
	z += excess
	first := ""
	if len(replies) > 0 {
		first = replies[0].String()
	}
	ss.srv.Logger.Info("qmtp message",
		"proto", "QMTP",
		"remote", ss.peer.RemoteIP,
		"sender", sender,
		"recipients", n,
		"to", proto.LogRecipients(to),
		"size", size,
		"accepted", k, "deferred", z, "rejected", d,
		"reply", first,
		"ms", time.Since(start).Milliseconds(),
	)
}

// serverReadError labels a read failure: grammar errors (a recipient
// overrunning the list among them: the netstring reader refuses it
// before reading its body) wrap ErrProtocol.
func serverReadError(what string, err error) error {
	return server.ReadError("qmtp", ErrProtocol, what, err)
}
