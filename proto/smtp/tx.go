package smtp

// The mail transaction, written here rather than through go-smtp's client
// because that client cannot pipeline (see the package comment).

import (
	"bufio"
	"errors"
	"fmt"
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
	if errors.Is(err, ErrRemoteViolation) || errors.Is(err, errConnClosed) {
		return err
	}
	var pe textproto.ProtocolError
	if errors.As(err, &pe) || errors.Is(err, gosmtp.ErrTooLongLine) {
		// go-smtp's reader found a malformed or overlong reply line.
		return fmt.Errorf("smtp: %w: %s: %v", ErrRemoteViolation, what, err)
	}
	return fmt.Errorf("smtp: %s: %w", what, err)
}

// writeCommands writes lines (CRLF added) within the command timeout.
func (s *session) writeCommands(w *wireConn, lines []string) error {
	if w.buffered() > 0 {
		return fmt.Errorf("smtp: %w: the server sent a reply to nothing", ErrRemoteViolation)
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	w.SetWriteDeadline(time.Now().Add(s.cmdTO))
	_, err := w.Write([]byte(b.String()))
	w.SetWriteDeadline(time.Time{})
	if err != nil {
		return s.networkError("sending "+commandName(lines[0]), s.cmdTO, err)
	}
	return nil
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

// transaction sends message i: [RSET,] MAIL, RCPT..., DATA, the message.
// It returns an error only when the session cannot go on; the message's
// results are then delivered by failRest.
func (s *session) transaction(i int, rset bool) error {
	m := &s.msgs[i]
	s.cur = make([]*RecipientResult, len(m.Recipients))
	s.rcptOK, s.sent = make([]bool, len(m.Recipients)), false
	set := func(j int, r proto.Reply, fromServer bool, stage Stage) {
		if s.cur[j] == nil {
			s.cur[j] = &RecipientResult{Package: i, Recipient: j, Reply: r, FromServer: fromServer,
				Stage: stage, RcptAccepted: s.rcptOK[j], Sent: s.sent}
		}
	}
	all := func(r proto.Reply, fromServer bool) {
		for j := range m.Recipients {
			set(j, r, fromServer, StageNone)
		}
	}

	info, err := s.scan(m)
	if err != nil {
		all(proto.Z("cannot read message: "+err.Error()), false)
		s.emit()
		return nil
	}
	if s.maxSize > 0 && info.wireSize > s.maxSize {
		all(proto.D(fmt.Sprintf("message is %d bytes, the server takes at most %d (SIZE) (#5.3.4)", info.wireSize, s.maxSize)), false)
		s.emit()
		return nil
	}

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
	if rset {
		cmds = append(cmds, command{kind: cmdRSET, line: "RSET"})
	}
	cmds = append(cmds, command{kind: cmdMAIL, line: mail})
	for j, r := range m.Recipients {
		cmds = append(cmds, command{kind: cmdRCPT, line: "RCPT TO:<" + r + ">", rcpt: j})
	}
	cmds = append(cmds, command{kind: cmdDATA, line: "DATA"})

	batch := 1
	if s.pipelining {
		batch = maxBatch
	}
	var (
		mailReply *reply // set when MAIL was refused
		accepted  []int
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
				set(c.rcpt, outcome(*mailReply), true, StageMail)
				continue
			case c.kind == cmdDATA && (mailReply != nil || (!s.pipelining && len(accepted) == 0)):
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
		for _, c := range chunk {
			r, err := s.readReply(s.w, commandName(c.line), s.cmdTO)
			if err != nil {
				return err
			}
			switch c.kind {
			case cmdRSET:
				if r.class() != 2 {
					return &serverRefused{step: "RSET", stage: StageRset, text: r.text}
				}
			case cmdMAIL:
				if r.class() != 2 {
					mailReply = &r
				}
			case cmdRCPT:
				if mailReply != nil {
					set(c.rcpt, outcome(*mailReply), true, StageMail)
				} else if r.class() == 2 {
					accepted = append(accepted, c.rcpt)
					s.rcptOK[c.rcpt] = true
				} else {
					set(c.rcpt, outcome(r), true, StageRcpt)
				}
			case cmdDATA:
				dataReply = &r
			}
		}
	}

	switch {
	case dataReply == nil:
		// DATA not sent: MAIL or every RCPT refused.
	case dataReply.code != 354 && (mailReply != nil || len(accepted) == 0):
		// The expected refusal of DATA after MAIL or all RCPTs failed.
	case dataReply.code != 354:
		r := outcome(*dataReply)
		if r.Status == proto.OK {
			r = proto.Z("unexpected reply to DATA: " + dataReply.text)
		}
		for _, j := range accepted {
			set(j, r, true, StageData)
		}
	case mailReply != nil || len(accepted) == 0:
		// 354 with nobody to deliver to: end the data at once.
		if err := s.writeCommands(s.w, []string{"."}); err != nil {
			return err
		}
		if _, err := s.readReply(s.w, "the end of an empty DATA", s.dataTO); err != nil {
			return err
		}
	default:
		r, err := s.data(m)
		if err != nil {
			return err
		}
		for _, j := range accepted {
			set(j, outcome(r), true, StageMessage)
		}
	}
	s.emit()
	return nil
}

// scan reads the message once for MAIL's SIZE and BODY.
func (s *session) scan(m *Message) (bodyInfo, error) {
	body, err := m.Open()
	if err != nil {
		return bodyInfo{}, err
	}
	defer body.Close()
	return scanBody(body, m.Size)
}

// data sends the message and its final "." within the data timeout, then
// waits for the reply, again within the data timeout. The reply is read
// only once the "." is written: a reply counts only for what was sent.
func (s *session) data(m *Message) (reply, error) {
	if s.w.buffered() > 0 {
		return reply{}, fmt.Errorf("smtp: %w: the server sent a reply to nothing", ErrRemoteViolation)
	}
	body, err := m.Open()
	if err != nil {
		// The server waits for the message and nothing can end DATA but
		// a message: the session cannot go on.
		return reply{}, fmt.Errorf("smtp: cannot read message: %w", err)
	}
	defer body.Close()
	s.w.SetWriteDeadline(time.Now().Add(s.dataTO))
	err = writeBody(bufio.NewWriterSize(s.w, 32<<10), body, m.Size)
	s.w.SetWriteDeadline(time.Time{})
	if err != nil {
		if errors.Is(err, errShortMessage) {
			return reply{}, fmt.Errorf("smtp: %w", err)
		}
		return reply{}, s.networkError("sending the message", s.dataTO, err)
	}
	s.sent = true
	return s.readReply(s.w, "the message", s.dataTO)
}

// emit delivers the results of the message under way.
func (s *session) emit() {
	for _, r := range s.cur {
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
	stage := StageNone
	var refused *serverRefused
	switch {
	case errors.As(cause, &refused):
		text, fromServer, stage = refused.text, true, refused.stage
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
			if i == s.next && s.cur != nil && s.cur[j] != nil {
				s.onResult(*s.cur[j])
				continue
			}
			r := RecipientResult{Package: i, Recipient: j, Reply: proto.Z(t), FromServer: fs}
			if fs {
				r.Stage = stage
			}
			if i == s.next && s.cur != nil {
				r.RcptAccepted, r.Sent = s.rcptOK[j], s.sent
			}
			s.onResult(r)
		}
	}
	s.cur = nil
	s.next = len(s.msgs)
}
