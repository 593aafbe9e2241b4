package smtp

// What `qbox probe` needs from SMTP beside delivery: telling an SMTP
// greeting from the first bytes a port sends (SniffGreeting), and one test
// message sent by this package's client with every reply of the dialogue
// reported as it arrives (SendOne), so that the probe shows the dialogue
// as swaks does without a second SMTP client.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"

	"qbox/proto"
)

// IsReplyStart says whether b starts as an SMTP reply line does: three
// digits, then a space, a dash, or the end of what was read (a CR may come
// first). It is the regexp ^[0-9]{3}([ -]|\r?$), written out so that no
// personality pays for compiling it at start-up. It is looser than the
// client's reply parser (any first digit): it recognises a server, it does
// not judge one.
func IsReplyStart(b []byte) bool {
	if len(b) < 3 {
		return false
	}
	for _, c := range b[:3] {
		if c < '0' || c > '9' {
			return false
		}
	}
	rest := b[3:]
	return len(rest) == 0 || rest[0] == ' ' || rest[0] == '-' || (len(rest) == 1 && rest[0] == '\r')
}

// maxSniffLine bounds each greeting line SniffGreeting reports.
const maxSniffLine = 512

// SniffGreeting reads the first bytes a server sent as an SMTP greeting.
// ok is false when b does not start as a reply line (IsReplyStart). code
// is the first line's three digits; lines are the lines read so far, CR LF
// removed, made printable and cut at 512 bytes each (the unfinished start
// of a line when no line is complete yet); complete says the greeting's
// last line (one without a dash after the code) has ended, so more bytes
// would not change it.
func SniffGreeting(b []byte) (code int, lines []string, complete, ok bool) {
	if !IsReplyStart(b) {
		return 0, nil, false, false
	}
	code = int(b[0]-'0')*100 + int(b[1]-'0')*10 + int(b[2]-'0')
	for rest := b; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		line := rest[:i]
		rest = rest[i+1:]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		lines = append(lines, proto.Printable(string(line), maxSniffLine))
		if len(line) < 4 || line[3] != '-' {
			complete = true
			break
		}
	}
	if len(lines) == 0 {
		lines = []string{proto.Printable(string(b), maxSniffLine)}
	}
	return code, lines, complete, true
}

// Exchange is one reply of a session, for a report of the dialogue: the
// command it answers and what the server said.
type Exchange struct {
	// Command is "greeting", the verb of the command answered (EHLO,
	// HELO, STARTTLS, RSET, MAIL, RCPT, DATA, QUIT), or "end of data"
	// for the reply to the message's final ".".
	Command string
	Code    int
	// Lines are the text of each line after its code, made printable
	// and cut at 512 bytes each; at most maxReplyLines of them.
	Lines []string
}

// SendOne sends one message on conn as Send does (the client's timeouts,
// TLS mode and HELO name) and calls onReply with every reply the server
// sends, in order, as it arrives: the reply to the final "." before QUIT
// is written, so a caller can take its timings there. Replies inside TLS
// are not seen (after STARTTLS's 220 onReply is called no more); a probe
// that wants the dialogue uses TLSNone. It returns the result of m's
// recipient (m must have exactly one) and the error that ended the session
// early, if any.
//
// Unlike Send, a session refused by the greeting or by EHLO and HELO with
// a 5xx gives a D: Send makes it a Z for a delivery engine to try again
// later; SendOne reports what the server said.
func (c *Client) SendOne(ctx context.Context, conn net.Conn, host string, m proto.Message, onReply func(Exchange)) (proto.Result, error) {
	if len(m.Recipients) != 1 {
		return proto.Result{}, fmt.Errorf("smtp: SendOne takes one recipient, not %d", len(m.Recipients))
	}
	tap := &replyTap{Conn: conn, onReply: onReply, pending: []string{"greeting"}}
	var res proto.Result
	got := false
	_, err := c.Send(ctx, tap, host, []proto.Message{m}, func(r proto.Result) { res, got = r, true })
	if !got {
		// Send refused the message before the session (an envelope
		// with CR or LF, a bad HELO name).
		return proto.Result{Reply: proto.Z("not sent"), Stage: proto.StageNone}, err
	}
	if res.FromServer && (res.Stage == proto.StageGreeting || res.Stage == proto.StageHello) &&
		res.Reply.Status == proto.Temporary && strings.HasPrefix(res.Reply.Text, "5") {
		res.Reply = proto.D(res.Reply.Text)
	}
	return res, err
}

// replyTap watches a session's bytes in both directions to pair each
// reply with the command it answers: commands are written as lines, the
// message's data from DATA's 354 up to the line ".", and SMTP answers in
// order. It keeps only bounded prefixes of what it sees: the lines the
// client's reader refuses (over maxReplyLine) are cut here, not held.
type replyTap struct {
	net.Conn
	onReply func(Exchange)

	pending []string // commands written and not yet answered, in order
	failed  error    // the first read error (see Read)
	off     bool     // after STARTTLS: the bytes are ciphertext

	// The reply being read.
	in      []byte // the unfinished line, at most maxReplyLine bytes
	inLong  bool   // the unfinished line was cut
	reply   Exchange
	inReply bool

	// What is being written.
	out     []byte // the unfinished line's start, at most maxOutHead bytes
	outLen  int    // its length
	inData  bool   // writing the message: lines are not commands
	dataNow bool   // DATA's 354 came: the next bytes written are data
}

// maxOutHead is how much of a written line the tap keeps: enough for a
// verb, or to see the "." that ends the data.
const maxOutHead = 16

// Read makes the first read error final. bufio (under go-smtp's
// textproto reader) hands a line cut short by a read error, a timeout
// above all, over as if it were whole; the error that did not reach go-smtp
// then ends the session at its next read or write, so a greeting cut by
// the deadline is a timeout, not a greeting.
func (t *replyTap) Read(p []byte) (int, error) {
	if t.failed != nil {
		return 0, t.failed
	}
	n, err := t.Conn.Read(p)
	if err != nil {
		t.failed = err
	}
	if !t.off {
		t.sawIn(p[:n])
	}
	return n, err
}

func (t *replyTap) Write(p []byte) (int, error) {
	if t.failed != nil {
		return 0, t.failed
	}
	n, err := t.Conn.Write(p)
	if !t.off {
		t.sawOut(p[:n])
	}
	return n, err
}

func (t *replyTap) sawIn(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i]
		}
		if room := maxReplyLine - len(t.in); len(chunk) > room {
			t.in = append(t.in, chunk[:room]...)
			t.inLong = true
		} else {
			t.in = append(t.in, chunk...)
		}
		if i < 0 {
			return
		}
		b = b[i+1:]
		line := t.in
		if n := len(line); n > 0 && line[n-1] == '\r' && !t.inLong {
			line = line[:n-1]
		}
		t.replyLine(line)
		t.in, t.inLong = t.in[:0], false
		if t.off {
			return
		}
	}
}

// replyLine takes one line from the server; a reply ends with a line
// whose code is not followed by a dash.
func (t *replyTap) replyLine(line []byte) {
	if !IsReplyStart(line) {
		return // the client ends the session; nothing to pair
	}
	code := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	if !t.inReply {
		t.reply, t.inReply = Exchange{Code: code}, true
	}
	if len(line) > 4 && len(t.reply.Lines) < maxReplyLines {
		t.reply.Lines = append(t.reply.Lines, proto.Printable(string(line[4:]), maxSniffLine))
	}
	if len(line) > 3 && line[3] == '-' {
		return
	}
	r := t.reply
	t.reply, t.inReply = Exchange{}, false
	if len(t.pending) == 0 {
		// The client ends the session on it (proto.ErrRemoteViolation); one
		// is reported, not every line a hostile server sends after it.
		r.Command, t.off = "reply to nothing", true
	} else {
		r.Command = t.pending[0]
		t.pending = t.pending[1:]
	}
	switch {
	case r.Command == "DATA" && r.Code == 354:
		t.dataNow = true
	case r.Command == "STARTTLS" && r.Code == 220:
		t.off = true
	}
	if t.onReply != nil {
		t.onReply(r)
	}
}

func (t *replyTap) sawOut(b []byte) {
	if t.dataNow {
		t.inData, t.dataNow = true, false
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i]
		}
		if room := maxOutHead - len(t.out); room > 0 {
			t.out = append(t.out, chunk[:min(room, len(chunk))]...)
		}
		t.outLen += len(chunk)
		if i < 0 {
			return
		}
		b = b[i+1:]
		line := strings.TrimSuffix(string(t.out), "\r")
		whole := t.outLen <= maxOutHead
		t.out, t.outLen = t.out[:0], 0
		switch {
		case t.inData:
			if whole && line == "." {
				t.inData = false
				t.pending = append(t.pending, "end of data")
			}
		default:
			t.pending = append(t.pending, strings.ToUpper(commandName(line)))
		}
	}
}
