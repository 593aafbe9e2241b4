// The SMTP server: go-smtp's server (github.com/emersion/go-smtp) speaks
// the protocol, this file feeds what it receives into a proto.Backend,
// the same store or queue program the QMQP and QMTP servers feed, with
// their limits and checks. MXPS wants every QMTP exchanger to speak SMTP
// on port 25 as well; this is that port.

package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"qbox/proto"
	"qbox/proto/server"
)

// NotAuthorized is the greeting a client outside the access list gets
// before the connection is closed (RFC 5321 3.1: 554 instead of 220).
const NotAuthorized = "554 5.7.1 " + server.NotAuthorized + "\r\n"

// Busy is the greeting a connection gets, before it is closed, when no
// session slot is free for it (every slot taken and the waiting room
// full, or its wait over): a temporary failure, the client comes again.
// 4.3.2 is RFC 3463's "system not accepting network messages", the code
// Postfix's postscreen uses for "all server ports are busy".
const Busy = "421 4.3.2 all server ports are busy, try again later\r\n"

// Replies of the SMTP server, in qmail-smtpd's words where it has them.
var (
	errBadSender = &gosmtp.SMTPError{Code: 553, EnhancedCode: gosmtp.EnhancedCode{5, 1, 7},
		Message: "sorry, unacceptable sender (#5.1.7)"}
	errBadRecipient = &gosmtp.SMTPError{Code: 553, EnhancedCode: gosmtp.EnhancedCode{5, 1, 3},
		Message: "sorry, I can't handle that recipient (#5.1.3)"}
	errRelayDenied = &gosmtp.SMTPError{Code: 553, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1},
		Message: "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"}
	// errNestedMail: go-smtp passes a second MAIL inside a transaction
	// on; taking it would give the recipients already accepted another
	// sender (RFC 5321 4.1.1.2), so it is refused as Postfix does and the
	// transaction under way goes on.
	errNestedMail = &gosmtp.SMTPError{Code: 503, EnhancedCode: gosmtp.EnhancedCode{5, 5, 1},
		Message: "sorry, one sender per transaction: RSET first (#5.5.1)"}
	errTooMany = &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 5, 3},
		Message: "sorry, too many recipients, send the rest later (#4.5.3)"}
	errServerClosedConn = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 0},
		Message: "connection closed, message not taken"}
	errStoreFailed = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
		Message: "sorry, I can't store the message right now (#4.3.0)"}
)

// Server answers SMTP for a proto.Backend. The zero value needs Backend.
//
// Serve runs it on a listener; ServeConn runs one session on a connection
// the caller accepted and checked, HandleConn one with the access check
// and log line (stdin and stdout under tcpserver or inetd).
type Server struct {
	Backend proto.Backend
	Limits  server.Limits
	// Hostname is this server's name in the greeting and EHLO reply.
	Hostname string
	// TLSConfig, when set, offers STARTTLS.
	TLSConfig *tls.Config
	// Timeout bounds each read and each write (idle time); 0 means 60s.
	Timeout time.Duration
	// SessionLimit bounds the whole session; 0 means one hour.
	SessionLimit time.Duration
	// Logger, if set, gets one line per message, and under Serve and
	// HandleConn one per connection and the accept loop's failures.
	Logger *slog.Logger
	// Stopping, once closed, ends every session waiting for a command
	// outside a mail transaction (nothing of a message under way): a
	// client that keeps an idle connection open does not hold up a stop.
	// Shutdown does the same for the sessions Serve runs.
	Stopping <-chan struct{}
	// RecipientAllowed, if set, decides per recipient whether this client
	// may send to it (qmail's rcpthosts and RELAYCLIENT); a refused one
	// gets 553.
	RecipientAllowed func(remoteIP, rcpt string) bool
	// CompletePath, if set, completes a bare path (a box without a
	// domain, which go-smtp refuses with 501 before a session sees it)
	// in MAIL FROM and RCPT TO on the command line, before the command
	// is parsed; message text is never touched. It must return an
	// address with a domain; a result that does not pass
	// proto.CheckRecipient, or holds a space, '<' or '>', leaves the
	// command as sent. It works on the clear-text command stream, so it
	// is not applied when TLSConfig is set (STARTTLS would hide it).
	CompletePath func(string) string
	// Envelopes, if set, is the memory every session's recipient
	// addresses are taken from (server.AddressCost each), shared with
	// other servers; a recipient that does not fit gets 452.
	Envelopes *server.Budget

	// Loop is the server's lifecycle, which gives it Allow (the client
	// networks served), Conns (the connection limit), Shutdown and Close:
	// Shutdown ends the sessions waiting for a command outside a mail
	// transaction at once (as Stopping does) and lets the others finish
	// their transaction; Close cuts every session at once.
	server.Loop
}

// Serve accepts connections on l and serves each in its own goroutine:
// a client outside Allow is greeted 554; beyond Conns the connection
// waits for a slot in Conns' waiting room, in order, briefly, and is
// otherwise greeted Busy (421) and closed; each session is
// ServeConn's, logged. Serve returns server.ErrServerClosed after Shutdown
// or Close, another error only if l fails for good; it closes l.
func (s *Server) Serve(l net.Listener) error { return s.Loop.Serve(l, s.config()) }

// HandleConn serves one connection accepted elsewhere (stdin and stdout
// under tcpserver or inetd) as Serve serves each: a peer.RemoteIP outside
// Allow is greeted 554 (an empty one, a local pipe, is served), then
// ServeConn under ctx and the connection's log line. No slot of Conns is
// taken. The caller closes conn.
func (s *Server) HandleConn(ctx context.Context, conn server.Conn, peer proto.Peer) {
	s.Loop.HandleConn(ctx, conn, peer, s.config())
}

// ServerResult summarises one session for the caller's log line.
type ServerResult struct {
	Messages    int   // DATA transactions answered
	Accepted    int   // of them: 250
	Deferred    int   // 4xx
	Rejected    int   // 5xx
	RcptRefused int   // RCPTs refused: 553 (a bad address, not ours to relay), 452 (over the limits)
	Bytes       int64 // message bytes received (LF line ends, as stored)
	TLS         bool  // STARTTLS was done
}

// ServeConn serves one SMTP session on conn until the client quits or
// goes away, idles past Timeout, outlasts SessionLimit or ctx is
// cancelled. The caller closes conn.
//
// Each RCPT gets its own reply: 553 for an address holding CR, LF or NUL,
// an empty or over-long one (proto.CheckRecipient) or one outside
// RecipientAllowed, 452 beyond MaxRecipients or the envelope budget, 250
// otherwise. The message goes to Backend (LF line ends, as the QMQP and
// QMTP servers hand it over; peer.Protocol "SMTP", or "ESMTPS" after
// STARTTLS, names the protocol in the store's Received line) and the
// reply to its final dot comes only once Commit has answered, so 250
// means the message is durable. The replies of Commit become one SMTP
// reply, which must never lose nor duplicate a recipient's copy:
//
//   - all K: 250;
//   - any Z: 451, the client sends again to every recipient (both stores
//     qbox has answer all or nothing, so a K beside a Z, which would be
//     stored twice, does not happen);
//   - otherwise, any D: 554, the client bounces the message; the text
//     says how many recipients got it when some did, so the bounce does
//     not hide a copy that was delivered (a 250 would lose the refused
//     recipients without a word).
//
// Only CRLF "." CRLF ends the data (go-smtp's reader): a "." line next
// to a bare LF is message text, and a bare LF stays a line end in the
// stored message, as Postfix's smtpd_forbid_bare_newline = normalize
// treats it, so no client can smuggle a second message inside one DATA.
//
// The error says why the session ended when it was not the client's QUIT
// or close: a timeout, a shutdown, a cut connection, a protocol error.
func (s *Server) ServeConn(ctx context.Context, conn server.Conn, peer proto.Peer) (ServerResult, error) {
	if s.CompletePath != nil && s.TLSConfig == nil {
		conn = completePaths(conn, s.CompletePath)
	}
	tc := server.NewTimedConn(ctx, conn, s.Timeout, s.SessionLimit)
	defer tc.Close()
	if s.Stopping != nil {
		tc.DrainOn(s.Stopping)
	}
	tc.DrainOn(s.Loop.ShuttingDown())
	tc.AtBoundary(true) // nothing is owed before the first MAIL
	sc := &serverConn{tc: tc, in: bufio.NewReaderSize(tc, 16<<10), raw: conn, closed: make(chan struct{})}
	st := &serverState{srv: s, ctx: ctx, peer: peer, tc: tc, conn: sc, lim: s.Limits.WithDefaults()}

	gs := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		return &serverSession{st: st, conn: c}, nil
	}))
	// The name the connection arrived for (tcpserver's TCPLOCALHOST
	// under --stdio), as in the Received line, else Hostname.
	gs.Domain = peer.LocalHost
	if gs.Domain == "" {
		gs.Domain = s.Hostname
	}
	if gs.Domain == "" {
		gs.Domain = "localhost"
	}
	gs.MaxRecipients = st.lim.MaxRecipients
	gs.MaxMessageBytes = st.lim.MaxMessageSize
	gs.MaxLineLength = st.lim.MaxLine
	gs.TLSConfig = s.TLSConfig
	gs.ErrorLog = st // go-smtp's own reports: why a session ended, panics
	// Deadlines are the TimedConn's (idle per read and write, capped by
	// the session's end): go-smtp's own would bound a whole DATA.
	gs.ReadTimeout, gs.WriteTimeout = 0, 0

	// go-smtp serves listeners; this one hands over conn, then waits
	// until go-smtp has closed it. Every wait of go-smtp's on the client
	// is bounded by the TimedConn; one on itself (its BDAT goroutine) is
	// not, so the session is given up, not waited for, once it outlasts
	// the session limit or the server cuts it: its slot must come back.
	idle, limit := s.Timeout, s.SessionLimit
	if idle <= 0 {
		idle = server.DefaultTimeout
	}
	if limit <= 0 {
		limit = server.DefaultSessionLimit
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		gs.Serve(&oneConnListener{conn: sc})
	}()
	stuck := time.NewTimer(limit + idle)
	select {
	case <-served:
	case <-stuck.C:
		sc.Close()
		<-served
	case <-ctx.Done():
		// The TimedConn fails every read now: go-smtp ends the session
		// at once unless it is stuck on itself.
		select {
		case <-served:
		case <-time.After(idle):
			sc.Close()
			<-served
		}
	}
	stuck.Stop()
	wait, cancel := context.WithTimeout(context.Background(), idle)
	if gs.Shutdown(wait) != nil { // waits for the session's goroutine
		st.setErr(errors.New("smtp: session stuck in go-smtp, given up"))
		if s.Logger != nil {
			s.Logger.Error("smtp session stuck in go-smtp, given up", "remote", peer.RemoteIP)
		}
	}
	cancel()

	st.mu.Lock()
	res, err := st.res, st.err
	st.mu.Unlock()
	readErr := sc.lastReadErr()
	if terr := sc.startTLSError(); terr != nil && err == nil {
		err = terr // the handshake after STARTTLS failed: the session ended there
	}
	drained := errors.Is(readErr, server.ErrDrained)
	switch {
	case drained:
		err = nil // stopped between transactions: nothing lost
	case err == nil && readErr != nil && readErr != io.EOF && !errors.Is(readErr, net.ErrClosed):
		err = fmt.Errorf("smtp: %w", readErr) // a timeout, a shutdown, a reset
	}
	if err != nil || drained {
		// The client may still be sending: closing on unread input
		// resets the connection, which can destroy the last reply.
		server.Linger(conn)
	}
	return res, err
}

// config is what the Loop needs of this server: its refusals are SMTP
// greetings.
func (s *Server) config() *server.Config {
	return &server.Config{Protocol: "SMTP", Refuse: greet(NotAuthorized), Busy: greet(Busy), Session: s.session,
		Timeout: s.Timeout, Hostname: s.Hostname, Logger: s.Logger}
}

// greet writes the greeting line g.
func greet(g string) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.WriteString(w, g)
		return err
	}
}

// session runs ServeConn for the Loop, which logs the connection line.
// ServeConn lingers itself where a reply could be lost.
func (s *Server) session(ctx context.Context, c server.Conn, peer proto.Peer) server.Outcome {
	res, err := s.ServeConn(ctx, c, peer)
	return server.Outcome{Err: err, Attrs: []any{"messages", res.Messages, "accepted", res.Accepted,
		"deferred", res.Deferred, "rejected", res.Rejected, "rcpt_refused", res.RcptRefused, "bytes", res.Bytes, "tls", res.TLS}}
}

// serverState is one connection's state, shared by the sessions go-smtp
// opens on it (a new one after STARTTLS).
type serverState struct {
	srv  *Server
	ctx  context.Context
	peer proto.Peer
	tc   *server.TimedConn
	conn *serverConn
	lim  server.Limits

	mu  sync.Mutex
	res ServerResult
	err error // what ended the session, if not the client
}

// Printf and Println take go-smtp's reports: "error handling ADDR: ERR"
// is why a session ended and becomes the result's error; anything else
// (a panic and its stack) is logged.
func (st *serverState) Printf(format string, v ...any) { st.report(fmt.Sprintf(format, v...)) }
func (st *serverState) Println(v ...any)               { st.report(fmt.Sprintln(v...)) }

func (st *serverState) report(msg string) {
	if rest, ok := strings.CutPrefix(msg, "error handling "); ok {
		if _, e, ok := strings.Cut(rest, ": "); ok {
			rest = e
		}
		st.setErr(errors.New("smtp: " + proto.OneLine(rest)))
		return
	}
	if st.srv.Logger != nil {
		st.srv.Logger.Error("smtp server", "remote", st.peer.RemoteIP, "msg", proto.Printable(msg, 4000))
	}
}

func (st *serverState) setErr(err error) {
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.mu.Unlock()
}

// serverSession is go-smtp's Session: one per EHLO (and again after
// STARTTLS). With BDAT, go-smtp runs Data in a goroutine of its own while
// it reads on, so the fields are guarded.
type serverSession struct {
	st   *serverState
	conn *gosmtp.Conn

	mu        sync.Mutex
	hasSender bool
	sender    string
	size      int64 // SIZE= of MAIL: where the store spools
	rcpts     []string
	held      int64 // taken from Server.Envelopes for rcpts
	// dataDone is closed when the running Data returns; abandoned is
	// the pipe of a BDAT message RSET abandoned: see Mail.
	dataDone  chan struct{}
	abandoned *io.PipeReader
}

func (ss *serverSession) Mail(from string, opts *gosmtp.MailOptions) error {
	if len(from) > ss.st.lim.MaxAddress || proto.CheckSender(from) != nil {
		return errBadSender
	}
	ss.waitData()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.hasSender {
		return errNestedMail
	}
	ss.hasSender, ss.sender = true, from
	if opts != nil {
		ss.size = opts.Size
	}
	// A transaction is under way: a stopping server lets it finish.
	ss.st.tc.AtBoundary(false)
	return nil
}

func (ss *serverSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	err := ss.rcpt(to)
	if err != nil {
		ss.st.mu.Lock()
		ss.st.res.RcptRefused++
		ss.st.mu.Unlock()
	}
	return err
}

func (ss *serverSession) rcpt(to string) error {
	if len(to) > ss.st.lim.MaxAddress || proto.CheckRecipient(to) != nil {
		return errBadRecipient
	}
	if f := ss.st.srv.RecipientAllowed; f != nil && !f(ss.st.peer.RemoteIP, to) {
		return errRelayDenied
	}
	cost := server.AddressCost(len(to))
	if !ss.st.srv.Envelopes.Take(cost) {
		return errTooMany
	}
	ss.mu.Lock()
	ss.rcpts = append(ss.rcpts, to)
	ss.held += cost
	ss.mu.Unlock()
	return nil
}

// Reset ends the transaction: after the reply to its data, RSET, a new
// EHLO or the end of the session.
func (ss *serverSession) Reset() {
	ss.waitData()
	ss.mu.Lock()
	ss.hasSender, ss.sender, ss.size, ss.rcpts = false, "", 0, nil
	held := ss.held
	ss.held = 0
	ss.mu.Unlock()
	ss.st.srv.Envelopes.Give(held)
	ss.st.tc.AtBoundary(true)
}

func (ss *serverSession) Logout() error {
	ss.Reset()
	return nil
}

// Data stores one message and answers only once it is durable.
func (ss *serverSession) Data(r io.Reader) error {
	start := time.Now()
	done := make(chan struct{})
	defer close(done)
	ss.mu.Lock()
	ss.dataDone = done
	env := proto.Envelope{Sender: ss.sender, Recipients: append([]string(nil), ss.rcpts...)}
	size := ss.size
	ss.mu.Unlock()

	st := ss.st
	if st.conn.isClosed() {
		// go-smtp closed the connection (QUIT, too many errors) but
		// goes on with commands it had already read: no reply can reach
		// the client, so nothing may be stored.
		io.Copy(io.Discard, r)
		return errServerClosedConn
	}
	peer := st.peer
	peer.Protocol = "SMTP"
	if _, ok := ss.conn.TLSConnectionState(); ok {
		peer.Protocol = "ESMTPS" // RFC 3848: ESMTP with STARTTLS
	}
	peer.Time = start
	d, beginErr := st.srv.Backend.Begin(st.ctx, peer, max(0, min(size, st.lim.MaxMessageSize)))
	stored, readErr, writeErr := copyLF(d, r, beginErr == nil)

	st.mu.Lock()
	st.res.Bytes += stored
	st.mu.Unlock()

	var reply *gosmtp.SMTPError
	var replies []proto.Reply
	switch {
	case readErr != nil:
		if d != nil {
			d.Abort()
		}
		var se *gosmtp.SMTPError
		if errors.Is(readErr, gosmtp.ErrDataReset) {
			// RSET or a new EHLO during BDAT.
			if pr, ok := r.(*io.PipeReader); ok {
				ss.mu.Lock()
				ss.abandoned = pr
				ss.mu.Unlock()
			}
			return readErr
		}
		if !errors.As(readErr, &se) {
			// The client went away or timed out mid-message: no
			// reply can reach it.
			st.setErr(fmt.Errorf("smtp: reading the message: %w", readErr))
			return readErr
		}
		reply = se // 552: too big
	case beginErr != nil || writeErr != nil:
		if d != nil {
			d.Abort()
		}
		err := beginErr
		if err == nil {
			err = writeErr
		}
		if st.srv.Logger != nil {
			st.srv.Logger.Error("smtp backend failed", "remote", peer.RemoteIP, "err", err.Error())
		}
		reply = errStoreFailed
	case st.conn.isClosed():
		d.Abort() // as above: the 250 could reach no one
		return errServerClosedConn
	default:
		replies = d.Commit(st.ctx, env)
		if len(replies) != len(env.Recipients) {
			reply = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
				Message: proto.MiscountedReplies(len(replies), len(env.Recipients)).Text}
			replies = nil
		} else {
			reply = DataReply(replies)
		}
	}

	st.mu.Lock()
	st.res.Messages++
	switch reply.Code / 100 {
	case 2:
		st.res.Accepted++
	case 4:
		st.res.Deferred++
	default:
		st.res.Rejected++
	}
	st.res.TLS = peer.Protocol == "ESMTPS"
	st.mu.Unlock()
	if st.srv.Logger != nil {
		st.srv.Logger.Info("smtp message",
			"proto", "SMTP",
			"remote", peer.RemoteIP,
			"tls", peer.Protocol == "ESMTPS",
			"sender", env.Sender,
			"recipients", len(env.Recipients),
			"to", proto.LogRecipients(env.Recipients),
			"size", stored,
			"reply", strconv.Itoa(reply.Code)+" "+reply.Message,
			"ms", time.Since(start).Milliseconds(),
		)
	}
	return reply
}

// waitData waits until a BDAT message abandoned by RSET, a new EHLO or
// the end of the session has left go-smtp for good. Its Data runs in a
// goroutine of go-smtp's, which hands the result to whatever transaction
// is current (go-smtp v0.25.1 reads its c.dataResult field only then):
// a new BDAT transaction would get the old one's failure as its reply
// while its own message is stored, or its goroutine would block for
// ever on the full channel and the session with it. So Reset and Mail
// wait until that goroutine is done: Data has returned (at once: go-smtp
// closed its pipe first) and go-smtp has closed the pipe's reading end,
// its last step. Both waits are bounded (about two seconds each), so a
// path where go-smtp resets without closing the pipe (STARTTLS in the
// middle of BDAT) only delays the session.
func (ss *serverSession) waitData() {
	ss.mu.Lock()
	running := ss.dataDone
	ss.mu.Unlock()
	if running != nil {
		select {
		case <-running:
		default:
			t := time.NewTimer(2 * time.Second)
			select {
			case <-running:
			case <-t.C:
			}
			t.Stop()
		}
	}
	ss.mu.Lock()
	abandoned := ss.abandoned
	ss.abandoned = nil
	ss.mu.Unlock()
	if abandoned != nil {
		waitReaderClosed(abandoned)
	}
}

// waitReaderClosed waits, boundedly, until go-smtp has closed the reading
// end of an abandoned BDAT pipe (a read then says io.ErrClosedPipe
// instead of the writer's error): nothing else tells when its goroutine
// has delivered the abandoned message's result. It takes microseconds;
// the bound (about two seconds) only keeps a go-smtp that behaves
// otherwise from stalling the session.
func waitReaderClosed(pr *io.PipeReader) {
	for i := 0; i < 2100; i++ {
		if _, err := pr.Read(nil); errors.Is(err, io.ErrClosedPipe) {
			return
		}
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}

// DataReply turns the store's replies (one per recipient) into the one
// reply SMTP has for the data; see ServeConn for the rule.
func DataReply(replies []proto.Reply) *gosmtp.SMTPError {
	var k, z, d int
	var firstZ, firstD, firstK string
	for _, r := range replies {
		switch r.Status {
		case proto.OK:
			if k == 0 {
				firstK = r.Text
			}
			k++
		case proto.Permanent:
			if d == 0 {
				firstD = r.Text
			}
			d++
		default:
			if z == 0 {
				firstZ = r.Text
			}
			z++
		}
	}
	text := func(s string) string { return proto.Printable(s, 400) }
	switch {
	case len(replies) == 0:
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "sorry, no recipients (#4.3.0)"}
	case z > 0:
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: enhancedCode(firstZ, 4), Message: text(firstZ)}
	case d > 0 && k > 0:
		return &gosmtp.SMTPError{Code: 554, EnhancedCode: enhancedCode(firstD, 5),
			Message: fmt.Sprintf("delivered to %d of %d recipients only, the others refused: %s", k, k+d, text(firstD))}
	case d > 0:
		return &gosmtp.SMTPError{Code: 554, EnhancedCode: enhancedCode(firstD, 5), Message: text(firstD)}
	}
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: text(firstK)}
}

// enhancedCode finds the status code a qmail-style text carries, as in
// "... (#5.3.0)", when its class is class; otherwise class.0.0.
func enhancedCode(text string, class int) gosmtp.EnhancedCode {
	i := strings.LastIndex(text, "(#")
	if i >= 0 {
		rest := text[i+2:]
		if j := strings.IndexByte(rest, ')'); j > 0 {
			parts := strings.Split(rest[:j], ".")
			if len(parts) == 3 {
				var c gosmtp.EnhancedCode
				ok := true
				for n, p := range parts {
					v, err := strconv.Atoi(p)
					if err != nil || v < 0 || v > 999 || len(p) > 3 {
						ok = false
						break
					}
					c[n] = v
				}
				if ok && c[0] == class {
					return c
				}
			}
		}
	}
	return gosmtp.EnhancedCode{class, 0, 0}
}

// copyLF copies the data (CRLF line ends, dot-unstuffed by go-smtp) into
// d with every CR LF turned into LF; a bare LF stays a line end, a bare CR
// stays. It reads r to its end whatever happens to d (the client must get
// its reply in step), and writes to d only while write is true and no
// write has failed. stored counts the converted bytes.
func copyLF(d proto.Delivery, r io.Reader, write bool) (stored int64, readErr, writeErr error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := (*bp)[:32<<10]
	conv := (*bp)[32<<10:][:0]
	pendingCR := false
	emit := func(p []byte) {
		stored += int64(len(p))
		if !write || writeErr != nil || len(p) == 0 {
			return
		}
		if _, err := d.Write(p); err != nil {
			writeErr = err
		}
	}
	for {
		n, err := r.Read(buf)
		if n > 0 {
			conv, pendingCR = server.AppendCRLFToLF(conv[:0], buf[:n], pendingCR)
			emit(conv)
		}
		if err == io.EOF {
			if pendingCR {
				emit([]byte{'\r'})
			}
			return stored, nil, writeErr
		}
		if err != nil {
			return stored, err, writeErr
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// serverConn is the connection under go-smtp: reads and writes go through
// the TimedConn (idle deadlines, the session's end, the stop); go-smtp's
// Close only marks it closed (the caller of ServeConn closes the socket),
// after which reads and writes fail as on a closed socket.
//
// Read hands out at most one line: go-smtp reads commands through a
// buffer of its own and goes on with the commands in it after it closed
// the connection (QUIT, too many errors), with no session left, which
// can wedge its BDAT code; with a line at a time its buffer holds
// nothing past the command being handled. (After STARTTLS go-smtp reads
// through crypto/tls, which hands out whole records; Data refuses any
// message once the connection is closed all the same.) The bytes read
// ahead here also never reach the TLS layer as if they had been
// encrypted: pipelined plain text after STARTTLS goes into the handshake
// and fails it.
type serverConn struct {
	tc      *server.TimedConn
	in      *bufio.Reader
	raw     server.Conn
	once    sync.Once
	closed  chan struct{}
	errMu   sync.Mutex
	readErr error // the last read error, for the session's end

	// STARTTLS (RFC 3207 4.2, the CVE-2011-0411 class): when go-smtp
	// says 220 to STARTTLS, every byte the client sent behind the command
	// is plain text it had no business pipelining, and is discarded
	// before the handshake reads; a failed handshake ends the session
	// (go-smtp would say 550 and go on in plain text).
	tlsState int   // 0 before STARTTLS's 220, 1 handshaking or in TLS
	tlsErr   error // the handshake failed (under errMu)
}

// go-smtp's replies around STARTTLS (v0.25): the go-ahead, and the
// reply to a failed handshake, after which it goes on in plain text.
const (
	startTLSGoAhead  = "220 2.0.0 Ready to start TLS\r\n"
	startTLSHandFail = "550 5.0.0 Handshake error\r\n"
)

// go-smtp's 250 to MAIL and to RCPT repeats the address ("I'll make
// sure <addr> gets this"), at least 40 bytes a recipient; shortOK answers
// as shortly as qmail-smtpd does, which on a slow line is time: a
// 100-recipient transaction's replies were most of its bytes down.
// Inside TLS these writes are records and keep go-smtp's wording.
var (
	rcptOKPrefix, rcptOKSuffix = []byte("250 2.0.0 I'll make sure <"), []byte("> gets this\r\n")
	mailOKPrefix, mailOKSuffix = []byte("250 2.0.0 Roger, accepting mail from <"), []byte(">\r\n")
	rcptOK, mailOK             = []byte("250 2.1.5 ok\r\n"), []byte("250 2.1.0 ok\r\n")
)

func shortOK(p []byte) []byte {
	switch {
	case bytes.HasPrefix(p, rcptOKPrefix) && bytes.HasSuffix(p, rcptOKSuffix):
		return rcptOK
	case bytes.HasPrefix(p, mailOKPrefix) && bytes.HasSuffix(p, mailOKSuffix):
		return mailOK
	}
	return nil
}

func (c *serverConn) startTLSError() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.tlsErr
}

func (c *serverConn) lastReadErr() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.readErr
}

func (c *serverConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *serverConn) Read(p []byte) (int, error) {
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	if c.in.Buffered() == 0 {
		if _, err := c.in.Peek(1); err != nil {
			c.errMu.Lock()
			c.readErr = err
			c.errMu.Unlock()
			if errors.Is(err, server.ErrIdleTimeout) || errors.Is(err, server.ErrSessionLimit) {
				// go-smtp answers a net.Error timeout with "421
				// 4.4.2 Idle timeout" rather than a connection error.
				err = timeoutError{err}
			}
			return 0, err
		}
	}
	buf, _ := c.in.Peek(c.in.Buffered())
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i+1]
	}
	n := copy(p, buf)
	c.in.Discard(n)
	return n, nil
}

func (c *serverConn) Write(p []byte) (int, error) {
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	// Inside TLS every write here is a TLS record (its first byte a
	// record type, never a digit): these plain-text replies can only be
	// go-smtp's own, from the goroutine that also reads commands.
	switch {
	case c.tlsState == 0 && string(p) == startTLSGoAhead:
		c.tlsState = 1
		if n := c.in.Buffered(); n > 0 {
			c.in.Discard(n)
		}
	case c.tlsState == 1 && string(p) == startTLSHandFail:
		c.errMu.Lock()
		c.tlsErr = errors.New("smtp: TLS handshake failed after STARTTLS: connection closed")
		c.errMu.Unlock()
		c.Close()
		return 0, net.ErrClosed
	case c.tlsState == 0:
		if short := shortOK(p); short != nil {
			if _, err := c.tc.Write(short); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.tc.Write(p)
}

func (c *serverConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *serverConn) LocalAddr() net.Addr {
	if a, ok := c.raw.(interface{ LocalAddr() net.Addr }); ok {
		return a.LocalAddr()
	}
	return stdioAddr{}
}

func (c *serverConn) RemoteAddr() net.Addr {
	if a, ok := c.raw.(interface{ RemoteAddr() net.Addr }); ok && a.RemoteAddr() != nil {
		return a.RemoteAddr()
	}
	return stdioAddr{}
}

// timeoutError is a TimedConn's timeout as the net.Error go-smtp looks for.
type timeoutError struct{ error }

func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (e timeoutError) Unwrap() error { return e.error }

// Deadlines belong to the TimedConn; go-smtp sets none (its timeouts are
// 0) and TLS only passes them on.
func (c *serverConn) SetDeadline(time.Time) error      { return nil }
func (c *serverConn) SetReadDeadline(time.Time) error  { return nil }
func (c *serverConn) SetWriteDeadline(time.Time) error { return nil }

// stdioAddr names a connection on stdin and stdout.
type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdio" }

// oneConnListener gives go-smtp's Serve one connection, then fails (which
// ends Serve) once that connection is closed.
type oneConnListener struct {
	conn *serverConn
	mu   sync.Mutex
	done bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	first := !l.done
	l.done = true
	l.mu.Unlock()
	if first {
		return l.conn, nil
	}
	<-l.conn.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }
