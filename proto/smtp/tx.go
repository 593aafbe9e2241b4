package smtp

// The mail transaction, written here rather than through go-smtp's client
// because that client cannot pipeline (see the package comment).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"qbox/proto"
)

// maxBatch bounds the commands written before their replies are read: a
// server answering as it reads could otherwise fill our receive buffer,
// stop reading, and leave both sides writing forever.
const maxBatch = 100

type cmdKind int

const (
	cmdRSET cmdKind = iota
	cmdMAIL
	cmdRCPT
	cmdDATA
)

type command struct {
	kind cmdKind
	line string
	rcpt int // for cmdRCPT: the recipient's index
}

// networkError describes a failed read or write.
func (s *session) networkError(what string, d time.Duration, err error) error {
	if s.ctx.Err() != nil {
		return fmt.Errorf("smtp: %w", s.ctx.Err())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("smtp: %w: %s not complete within %v", ErrTimeout, what, d)
	}
	if errors.Is(err, proto.ErrRemoteViolation) || errors.Is(err, errConnClosed) {
		return err
	}
	var pe textproto.ProtocolError
	if errors.As(err, &pe) || errors.Is(err, gosmtp.ErrTooLongLine) {
		// go-smtp's reader found a malformed or overlong reply line.
		return fmt.Errorf("smtp: %w: %s: %v", proto.ErrRemoteViolation, what, err)
	}
	return fmt.Errorf("smtp: %s: %w", what, err)
}

// writeCommands writes lines (CRLF added) within the command timeout, in
// one batch, and records for each the offset its reply must start from:
// the kernel's count of bytes received just before the write that handed
// over the line's final LF (see send).
func (s *session) writeCommands(w *wireConn, lines []string) error {
	if w.buffered() > 0 {
		return fmt.Errorf("smtp: %w: the server sent a reply to nothing", proto.ErrRemoteViolation)
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	w.SetWriteDeadline(time.Now().Add(s.cmdTO))
	pieces, err := s.send(w, []byte(b.String()))
	w.SetWriteDeadline(time.Time{})
	if err != nil {
		return s.networkError("sending "+commandName(lines[0]), s.cmdTO, err)
	}
	end := 0
	for _, l := range lines {
		end += len(l) + 2
		w.expect(fromFor(pieces, end-1))
	}
	return nil
}

// handOverMax bounds what one write of send carries (see handOver).
const handOverMax = 4096

// handed is one write of handOver: b[:end] was handed over once it
// returned, and mark was taken just before it.
type handed struct {
	end  int
	mark proto.ArrivalMark
}

// piece is one write of send: a reply to what ends in b[:end], and not
// in an earlier piece, must start at stream offset from or later.
type piece struct {
	end  int
	from int64
}

// fromFor is the offset a reply to what ends with b[i] must start from.
func fromFor(pieces []piece, i int) int64 {
	for _, p := range pieces {
		if i < p.end {
			return p.from
		}
	}
	return pieces[len(pieces)-1].from
}

// send writes b (commands, or the end of a message and its ".") and says,
// for each write, the stream offset a reply to what that write ends must
// start from: a reply starting lower had bytes on the socket before the
// last byte of what it answers was handed to the kernel.
//
// Before TLS the offset is the kernel's count of bytes received
// (proto.ArrivalMark), taken right before each write (handOver), and
// each write carries at most handOverMax bytes: exact to the byte, and a
// batch of commands or the end of a message smaller than that is still
// one write. Inside TLS the socket counts records, not the plaintext,
// and TLS 1.3 sends session tickets unasked, so the check is the
// reader's: just before each write, everything the socket holds is read
// without waiting (each complete record decrypted, as far as the reply
// buffer has room), and a reply starting in what was read then is early.
// A reply whose record had not wholly arrived at that moment is not
// caught.
func (s *session) send(w *wireConn, b []byte) ([]piece, error) {
	inTLS := s.tlsConn != nil && w.Conn == s.tlsConn
	pause := -1
	if h := s.c.testPause; h != nil && !h.done && h.base >= 0 {
		if p := h.at - (w.written - h.base); p >= 0 && p <= int64(len(b)) {
			pause = int(p)
		}
	}
	var pieces []piece
	for off := 0; ; {
		if off == pause {
			s.c.testPause.wait(s.cc.Conn)
			s.c.testPause.done = true
			pause = -1
		}
		if off == len(b) {
			return pieces, nil
		}
		end := min(off+handOverMax, len(b))
		if pause > off && pause < end {
			end = pause
		}
		if inTLS {
			from := s.drain(w)
			n, err := w.Write(b[off:end])
			if n > 0 {
				pieces = append(pieces, piece{end: off + n, from: from})
			}
			if err != nil {
				return pieces, err
			}
		} else {
			writes, n, err := handOver(s.cc.Conn, b[off:end])
			s.cc.out += int64(n)
			w.written += int64(n)
			for _, h := range writes {
				from := w.total // what the reader holds is early in any case
				if h.mark.Known && h.mark.Offset > from {
					from = h.mark.Offset
				}
				pieces = append(pieces, piece{end: off + h.end, from: from})
			}
			if err != nil {
				return pieces, err
			}
		}
		off = end
	}
}

// testPause, set by a test, stops send once the transaction's first at
// bytes are handed over, until wait returns (the offset walk).
type pauseHook struct {
	at   int64
	base int64 // s.w.written when the first transaction began; -1 before
	done bool
	wait func(net.Conn)
}

// drain reads, without waiting, what the socket under TLS holds, into
// w's buffer while it has room, and returns the plaintext offset reached.
func (s *session) drain(w *wireConn) int64 {
	s.cc.poll = true
	defer func() { s.cc.poll = false }()
	for w.end-w.start < len(w.buf) {
		if w.fill() != nil {
			break
		}
	}
	return w.total
}

// readReply reads the reply to what (a command name) within d.
func (s *session) readReply(w *wireConn, what string, d time.Duration) (reply, error) {
	w.SetReadDeadline(time.Now().Add(d))
	r, err := w.readReply()
	w.SetReadDeadline(time.Time{})
	if err != nil {
		return reply{}, s.networkError("the reply to "+what, d, err)
	}
	s.replies++
	return r, nil
}

// command writes one command and reads its reply.
func (s *session) command(line string, w *wireConn) (reply, error) {
	if err := s.writeCommands(w, []string{line}); err != nil {
		return reply{}, err
	}
	return s.readReply(w, commandName(line), s.cmdTO)
}

func commandName(line string) string {
	if i := strings.IndexAny(line, " :"); i >= 0 {
		return line[:i]
	}
	return line
}

// outcome maps a reply to a recipient's K, Z or D.
func outcome(r reply) proto.Reply {
	switch r.class() {
	case 2:
		return proto.K(r.text)
	case 5:
		return proto.D(r.text)
	case 4:
		return proto.Z(r.text)
	}
	return proto.Z("unexpected reply: " + r.text)
}

// tx is one message's transaction: its results as they are decided, the
// recipients RCPT accepted, and whether the message and its "." were
// written in full.
type tx struct {
	i        int
	res      []*proto.Result
	rcptOK   []bool
	accepted []int
	sent     bool
}

func newTx(i, n int) *tx {
	return &tx{i: i, res: make([]*proto.Result, n), rcptOK: make([]bool, n)}
}

// set decides recipient j's result, unless it is decided already.
func (t *tx) set(j int, r proto.Reply, fromServer bool, stage proto.Stage) {
	if t.res[j] == nil {
		t.res[j] = &proto.Result{Message: t.i, Recipient: j, Reply: r, FromServer: fromServer,
			Stage: stage, RcptAccepted: t.rcptOK[j], Sent: t.sent}
	}
}

func (t *tx) all(r proto.Reply, fromServer bool) {
	for j := range t.res {
		t.set(j, r, fromServer, proto.StageNone)
	}
}

// errStopped ends the session when proto.StopStarting asked for it
// before a message was started.
func (s *session) errStopped() error {
	s.notStarted = true
	return fmt.Errorf("smtp: %w", proto.ErrInterrupted)
}

// transaction sends message i: [RSET,] MAIL, RCPT..., DATA, the message.
// It returns an error only when the session cannot go on; the message's
// results are then delivered by failRest.
//
// With PIPELINING (RFC 2920 lets the end of data be followed by the next
// MAIL in the same batch), the reply to a message's "." is not waited for
// before the next message's first batch: that batch is written after the
// ".", then the "." reply is read (s.dot), then the batch's. A transaction
// ended by the reply to its "." needs no RSET; one ended any other way
// (MAIL, every RCPT or DATA refused) gets one before the next MAIL.
// Without PIPELINING every transaction after the first starts with RSET
// and each command waits for its reply, as before.
func (s *session) transaction(i int) error {
	m := &s.msgs[i]
	t := newTx(i, len(m.Recipients))
	// skip gives message i its results without sending it: after the
	// pending "." reply, so that results stay in order.
	skip := func(r proto.Reply) error {
		if err := s.settleDot(); err != nil {
			return err
		}
		s.cur = t
		t.all(r, false)
		s.emit()
		return nil
	}

	info, err := s.scan(m)
	if err != nil {
		return skip(proto.Z("cannot read message: " + err.Error()))
	}
	if s.maxSize > 0 && info.wireSize > s.maxSize {
		return skip(proto.D(fmt.Sprintf("message is %d bytes, the server takes at most %d (SIZE) (#5.3.4)", info.wireSize, s.maxSize)))
	}
	// An address is written between < and > as it is: one holding either
	// would end the path early and append what follows as ESMTP
	// parameters (RCPT TO:<a@b> NOTIFY=NEVER>). It is refused here, that
	// recipient alone (D, never sent), or the whole message for a sender.
	if !pathSafe(m.Sender) {
		return skip(errUnsafePath)
	}
	good := 0
	for j, r := range m.Recipients {
		if pathSafe(r) {
			good++
		} else {
			t.set(j, errUnsafePath, false, proto.StageNone)
		}
	}
	if good == 0 {
		return skip(errUnsafePath)
	}
	// The last look before this message's MAIL is written.
	if proto.StoppedStarting(s.ctx) {
		if err := s.settleDot(); err != nil {
			return err
		}
		return s.errStopped()
	}
	if h := s.c.testPause; h != nil && h.base < 0 {
		h.base = s.w.written
	}
	if s.dot == nil {
		s.cur = t
	} // else t becomes s.cur once the "." reply before it is read

	mail := "MAIL FROM:<" + m.Sender + ">"
	if s.sizeOK {
		mail += " SIZE=" + strconv.FormatInt(info.wireSize, 10)
	}
	if info.eightBit && s.eightBit {
		mail += " BODY=8BITMIME"
	}
	// With 8-bit bytes and no 8BITMIME the message goes as it is, as
	// qmail-remote sends it: refusing it would bounce mail that nearly
	// every server takes, and a 7-bit conversion would change its bytes.
	var cmds []command
	if i > 0 && (!s.pipelining || s.txOpen) {
		cmds = append(cmds, command{kind: cmdRSET, line: "RSET"})
	}
	cmds = append(cmds, command{kind: cmdMAIL, line: mail})
	for j, r := range m.Recipients {
		if pathSafe(r) {
			cmds = append(cmds, command{kind: cmdRCPT, line: "RCPT TO:<" + r + ">", rcpt: j})
		}
	}
	cmds = append(cmds, command{kind: cmdDATA, line: "DATA"})
	s.txOpen = true

	batch := 1
	if s.pipelining {
		batch = maxBatch
	}
	var (
		mailReply *reply // set when MAIL was refused
		dataReply *reply
	)
	for k := 0; k < len(cmds); {
		// Compose a batch, leaving out what replies already read make
		// pointless (without PIPELINING, a batch is one command).
		var chunk []command
		for k < len(cmds) && len(chunk) < batch {
			c := cmds[k]
			k++
			switch {
			case c.kind == cmdRCPT && mailReply != nil:
				t.set(c.rcpt, outcome(*mailReply), true, proto.StageMail)
				continue
			case c.kind == cmdDATA && (mailReply != nil || (!s.pipelining && len(t.accepted) == 0)):
				continue
			}
			chunk = append(chunk, c)
		}
		if len(chunk) == 0 {
			continue
		}
		lines := make([]string, len(chunk))
		for n, c := range chunk {
			lines[n] = c.line
		}
		if err := s.writeCommands(s.w, lines); err != nil {
			return err
		}
		if s.dot != nil {
			// The previous message's "." reply comes before this batch's.
			if err := s.settleDot(); err != nil {
				return err
			}
			s.cur = t
			if proto.StoppedStarting(s.ctx) {
				// The stop came while this batch was on its way: the
				// message is abandoned before its data, and the session
				// ends without reading the replies owed (the caller
				// closes the connection; without its "." the server
				// delivers nothing).
				return s.errStopped()
			}
		}
		for _, c := range chunk {
			r, err := s.readReply(s.w, commandName(c.line), s.cmdTO)
			if err != nil {
				return err
			}
			switch c.kind {
			case cmdRSET:
				if r.class() != 2 {
					return &serverRefused{step: "RSET", stage: proto.StageRset, text: r.text}
				}
			case cmdMAIL:
				if r.class() != 2 {
					mailReply = &r
				}
			case cmdRCPT:
				if mailReply != nil {
					t.set(c.rcpt, outcome(*mailReply), true, proto.StageMail)
				} else if r.class() == 2 {
					t.accepted = append(t.accepted, c.rcpt)
					t.rcptOK[c.rcpt] = true
				} else {
					t.set(c.rcpt, outcome(r), true, proto.StageRcpt)
				}
			case cmdDATA:
				dataReply = &r
			}
		}
	}

	switch {
	case dataReply == nil:
		// DATA not sent: MAIL or every RCPT refused.
	case dataReply.code != 354 && (mailReply != nil || len(t.accepted) == 0):
		// The expected refusal of DATA after MAIL or all RCPTs failed.
	case dataReply.code != 354:
		r := outcome(*dataReply)
		if r.Status == proto.OK {
			r = proto.Z("unexpected reply to DATA: " + dataReply.text)
		}
		for _, j := range t.accepted {
			t.set(j, r, true, proto.StageData)
		}
	case mailReply != nil || len(t.accepted) == 0:
		// 354 with nobody to deliver to: end the data at once.
		if err := s.writeCommands(s.w, []string{"."}); err != nil {
			return err
		}
		if _, err := s.readReply(s.w, "the end of an empty DATA", s.dataTO); err != nil {
			return err
		}
		s.txOpen = false
	default:
		if err := s.data(m, t); err != nil {
			return err
		}
		s.dot = t
		s.txOpen = false // whatever its reply, the "." ends the transaction
		if s.pipelining && i+1 < len(s.msgs) && !proto.StoppedStarting(s.ctx) {
			// The reply is read after the next message's first batch.
			s.dot = t
			return nil
		}
		return s.settleDot()
	}
	s.emit()
	return nil
}

// settleDot reads the reply to the "." of the message whose data was
// written last, if it is still owed, and delivers that message's results.
// It is s.cur.
func (s *session) settleDot() error {
	t := s.dot
	if t == nil {
		return nil
	}
	s.dot = nil
	r, err := s.readReply(s.w, "the message", s.dataTO)
	if err != nil {
		return err
	}
	for _, j := range t.accepted {
		t.set(j, outcome(r), true, proto.StageMessage)
	}
	s.emit()
	return nil
}

// scan reads the message once for MAIL's SIZE and BODY.
func (s *session) scan(m *proto.Message) (bodyInfo, error) {
	body, err := m.Open()
	if err != nil {
		return bodyInfo{}, err
	}
	defer body.Close()
	return scanBody(body, m.Size)
}

// data sends the message and its final "." within the data timeout and
// marks t sent. Its reply (settleDot) is read, again within the data
// timeout, only once the "." is written: a reply counts only for what was
// sent.
func (s *session) data(m *proto.Message, t *tx) error {
	if s.w.buffered() > 0 {
		return fmt.Errorf("smtp: %w: the server sent a reply to nothing", proto.ErrRemoteViolation)
	}
	body, err := m.Open()
	if err != nil {
		// The server waits for the message and nothing can end DATA but
		// a message: the session cannot go on.
		return fmt.Errorf("smtp: cannot read message: %w", err)
	}
	defer body.Close()
	// The message goes out as it is read, but for its last bytes (at
	// most handOverMax, the "." included): they go in the write whose
	// mark the reply to the "." is judged by.
	s.w.SetWriteDeadline(time.Now().Add(s.dataTO))
	tail := &tailHold{w: s.w}
	err = writeBody(bufio.NewWriterSize(tail, 32<<10), body, m.Size)
	if err == nil {
		var pieces []piece
		pieces, err = s.send(s.w, tail.held)
		if err == nil {
			s.w.expect(fromFor(pieces, len(tail.held)-1))
		}
	}
	s.w.SetWriteDeadline(time.Time{})
	if err != nil {
		if errors.Is(err, errShortMessage) {
			return fmt.Errorf("smtp: %w", err)
		}
		return s.networkError("sending the message", s.dataTO, err)
	}
	t.sent = true
	return nil
}

// tailHold passes on what is written to it but for the last handOverMax
// bytes, which it holds for the final write (send).
type tailHold struct {
	w    io.Writer
	held []byte
}

func (t *tailHold) Write(p []byte) (int, error) {
	t.held = append(t.held, p...)
	if k := len(t.held) - handOverMax; k > 0 {
		if _, err := t.w.Write(t.held[:k]); err != nil {
			return 0, err
		}
		t.held = append(t.held[:0], t.held[k:]...)
	}
	return len(p), nil
}

// emit delivers the results of the message under way.
func (s *session) emit() {
	for _, r := range s.cur.res {
		s.onResult(*r)
	}
	s.cur = nil
	s.next++
}

// quit ends the session politely; its outcome changes nothing.
func (s *session) quit() {
	if s.w == nil || s.w.buffered() > 0 {
		return
	}
	if err := s.writeCommands(s.w, []string{"QUIT"}); err != nil {
		return
	}
	s.readReply(s.w, "QUIT", s.cmdTO)
}

// failRest gives every recipient not yet answered a Z.
func (s *session) failRest(cause error) {
	if s.next >= len(s.msgs) {
		return
	}
	text := "no reply from the server"
	fromServer := false
	stage := proto.StageNone
	var refused *serverRefused
	var authErr *authError
	switch {
	case errors.As(cause, &refused):
		text, fromServer, stage = refused.text, true, refused.stage
	case errors.As(cause, &authErr), errors.Is(cause, ErrTLSRequired):
		// Not "no reply": the server answered, and this says what was wrong.
		text = cause.Error()
	case cause != nil:
		text = "no reply from the server: " + cause.Error()
	}
	text = proto.OneLine(text)
	for i := s.next; i < len(s.msgs); i++ {
		t, fs := text, fromServer
		if s.notStarted {
			t, fs = "not sent: "+proto.ErrInterrupted.Error(), false
		}
		for j := range s.msgs[i].Recipients {
			if i == s.next && s.cur != nil && s.cur.res[j] != nil {
				s.onResult(*s.cur.res[j])
				continue
			}
			r := proto.Result{Message: i, Recipient: j, Reply: proto.Z(t), FromServer: fs}
			if fs {
				r.Stage = stage
			}
			if i == s.next && s.cur != nil {
				r.RcptAccepted, r.Sent = s.cur.rcptOK[j], s.cur.sent
			}
			s.onResult(r)
		}
	}
	s.cur = nil
	s.next = len(s.msgs)
}

// errUnsafePath answers an address that cannot be written in an SMTP
// path as it is (see pathSafe).
var errUnsafePath = proto.D("sorry, an address with < or > cannot be written in an SMTP command (#5.1.3)")

// pathSafe says whether addr can stand between < and > unchanged. CR, LF
// and NUL never reach here (proto.CheckRecipient where addresses enter).
func pathSafe(addr string) bool { return !strings.ContainsAny(addr, "<>\r\n\x00") }
