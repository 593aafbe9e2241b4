package smtp

// The connection as both go-smtp and this package's own transaction code
// see it, and the reader of SMTP replies. Every byte from the server is
// hostile: a reply line is at most maxReplyLine bytes, a reply at most
// maxReplyLines lines, and go-smtp's part of the session (greeting and
// EHLO) may read at most goSMTPBudget bytes in all, so no server can make
// the client hold more than a few hundred KiB whatever it sends.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"qbox/proto"
)

const (
	// maxReplyLine bounds one reply line, CRLF included: RFC 5321
	// allows 512; go-smtp's client allows 2000, and so does this one.
	maxReplyLine = 2000
	// maxReplyLines bounds the lines of one reply (an EHLO reply lists
	// a dozen extensions; a hundred lines is no honest reply).
	maxReplyLines = 100
	// goSMTPBudget bounds what go-smtp may read for the greeting and
	// the EHLO (or HELO) reply together.
	goSMTPBudget = 64 << 10
)

// wireConn is the connection under go-smtp's client and this package's
// own commands. Read hands out at most one line per call, so go-smtp's
// buffered reader never holds bytes beyond the reply it parses: whatever
// the server sends next stays here, for this package's reply reader, and
// bytes sent out of turn can be seen (buffered).
type wireConn struct {
	net.Conn
	ctx context.Context
	rd  io.Reader // the connection's reader (Conn, or a test's bytes)

	buf        [4096]byte
	start, end int

	synthetic []byte // handed out before anything read (see afterTLS)
	budget    int64  // bytes Read may still hand out; < 0: no limit

	// total counts the bytes read through rd: for the connection before
	// TLS, the server's stream offset from its first byte (the greeting
	// included); inside TLS, the plaintext's. owed holds, for each reply
	// owed to a command this package wrote, in order, the stream offset
	// below which that reply must not start (see session.handOver).
	total int64
	owed  []int64
	// written counts the bytes written through w (plaintext inside TLS).
	written int64
	// goFrom: while go-smtp speaks (greeting, EHLO, its HELO), the
	// offset the reply to its last command must start from; -1 when no
	// reply is owed to it.
	goFrom int64
}

func newWireConn(ctx context.Context, c net.Conn) *wireConn {
	return &wireConn{Conn: c, ctx: ctx, rd: c, budget: -1, goFrom: -1}
}

func (w *wireConn) buffered() int { return w.end - w.start + len(w.synthetic) }

// offset is the stream offset of the next byte not yet taken.
func (w *wireConn) offset() int64 { return w.total - int64(w.end-w.start) }

// expect records that one more reply is owed, which must start at stream
// offset from or later.
func (w *wireConn) expect(from int64) { w.owed = append(w.owed, from) }

// errEarly is a reply that started below the offset its command allows:
// its bytes were on the way before the last byte of what it answers was
// handed to the kernel.
var errEarly = errors.New("a reply sent before the last byte of what it answers")

// errWouldBlock is what a poll (countConn in poll mode) returns when
// nothing more is on the socket: temporary and a timeout, so a TLS
// connection over it keeps a partial record for the next read.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "nothing more on the socket" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// fill reads once from the network, after what the buffer still holds
// (moved to its front).
func (w *wireConn) fill() error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if w.start > 0 {
		w.end = copy(w.buf[:], w.buf[w.start:w.end])
		w.start = 0
	}
	n, err := w.rd.Read(w.buf[w.end:])
	w.end += n
	w.total += int64(n)
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// Read gives go-smtp at most one line, and only a whole one: the
// textproto reader under go-smtp takes a line cut short by a read error
// (a timeout in the middle of the greeting, the server closing) for a
// complete one, and would answer a half-sent "220" with EHLO.
func (w *wireConn) Read(p []byte) (int, error) {
	if len(w.synthetic) > 0 {
		n := copy(p, w.synthetic)
		w.synthetic = w.synthetic[n:]
		return n, nil
	}
	if w.goFrom >= 0 {
		from := w.goFrom
		w.goFrom = -1
		if at := w.offset(); at < from {
			return 0, fmt.Errorf("smtp: %w: %v (it starts at byte %d of the server's stream; only bytes from %d on came after)", proto.ErrRemoteViolation, errEarly, at, from)
		}
	}
	i := bytes.IndexByte(w.buf[w.start:w.end], '\n')
	for i < 0 {
		if w.end-w.start >= maxReplyLine {
			return 0, fmt.Errorf("smtp: %w: a reply line longer than %d bytes", proto.ErrRemoteViolation, maxReplyLine)
		}
		held := w.end - w.start
		if err := w.fill(); err != nil {
			return 0, err
		}
		if j := bytes.IndexByte(w.buf[w.start+held:w.end], '\n'); j >= 0 {
			i = held + j
		}
	}
	chunk := w.buf[w.start : w.start+i+1]
	if len(chunk) > len(p) {
		chunk = chunk[:len(p)]
	}
	if w.budget >= 0 {
		if int64(len(chunk)) > w.budget {
			return 0, fmt.Errorf("smtp: %w: the greeting and EHLO reply exceed %d bytes", proto.ErrRemoteViolation, goSMTPBudget)
		}
		w.budget -= int64(len(chunk))
	}
	n := copy(p, chunk)
	w.start += n
	return n, nil
}

// Write is go-smtp's way out (this package's own commands go through
// session.send). While go-smtp speaks, a command written with bytes of
// the server's already held here, or already on the socket, would take
// them for its reply: they are early, and so is any reply that starts
// below the count of bytes received taken just before the write.
func (w *wireConn) Write(p []byte) (int, error) {
	if w.budget >= 0 && len(p) > 0 && p[len(p)-1] == '\n' {
		if w.buffered() > 0 {
			return 0, fmt.Errorf("smtp: %w: the server sent a reply to nothing", proto.ErrRemoteViolation)
		}
		w.goFrom = w.total
		if m := proto.MarkArrivals(w.Conn); m.Known && m.Offset > w.goFrom {
			w.goFrom = m.Offset
		}
	}
	n, err := w.Conn.Write(p)
	w.written += int64(n)
	return n, err
}

// Close does nothing: go-smtp closes its connection when the greeting
// fails, but the connection is the caller's (Send never closes it).
func (w *wireConn) Close() error { return nil }

// Deadlines set by go-smtp after the context ended would revive a
// connection the context's watcher has just expired.
func (w *wireConn) SetDeadline(t time.Time) error {
	if w.ctx.Err() != nil {
		t = time.Unix(1, 0)
	}
	return w.Conn.SetDeadline(t)
}

func (w *wireConn) SetReadDeadline(t time.Time) error {
	if w.ctx.Err() != nil {
		t = time.Unix(1, 0)
	}
	return w.Conn.SetReadDeadline(t)
}

func (w *wireConn) SetWriteDeadline(t time.Time) error {
	if w.ctx.Err() != nil {
		t = time.Unix(1, 0)
	}
	return w.Conn.SetWriteDeadline(t)
}

// readLine returns the next line without its line end (LF, or CRLF).
func (w *wireConn) readLine() ([]byte, error) {
	var line []byte
	for {
		if w.start == w.end {
			if err := w.fill(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil, errConnClosed
				}
				return nil, err
			}
		}
		chunk := w.buf[w.start:w.end]
		i := bytes.IndexByte(chunk, '\n')
		if i >= 0 {
			chunk = chunk[:i+1]
		}
		if len(line)+len(chunk) > maxReplyLine {
			return nil, fmt.Errorf("smtp: %w: a reply line longer than %d bytes", proto.ErrRemoteViolation, maxReplyLine)
		}
		line = append(line, chunk...)
		w.start += len(chunk)
		if i >= 0 {
			line = line[:len(line)-1]
			return bytes.TrimSuffix(line, []byte{'\r'}), nil
		}
	}
}

var errConnClosed = errors.New("smtp: connection closed by the server")

// reply is one SMTP reply: its code, and the code and text of all its
// lines as one line, to quote in a bounce or a log.
type reply struct {
	code int
	text string
}

func (r reply) class() int { return r.code / 100 }

// readReply reads one reply, single- or multi-line. A reply owed to a
// command this package wrote that starts below the offset recorded for it
// (expect) is a violation, whatever it says.
func (w *wireConn) readReply() (reply, error) {
	if len(w.owed) > 0 {
		from := w.owed[0]
		w.owed = w.owed[1:]
		if at := w.offset(); at < from {
			return reply{}, fmt.Errorf("smtp: %w: %v (it starts at byte %d of the server's stream; only bytes from %d on came after)", proto.ErrRemoteViolation, errEarly, at, from)
		}
	}
	var (
		code  int
		texts []string
		size  int
	)
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return reply{}, fmt.Errorf("smtp: %w: a reply of more than %d lines", proto.ErrRemoteViolation, maxReplyLines)
		}
		line, err := w.readLine()
		if err != nil {
			return reply{}, err
		}
		c, more, text, err := parseReplyLine(line)
		if err != nil {
			return reply{}, err
		}
		if n == 0 {
			code = c
		} else if c != code {
			return reply{}, fmt.Errorf("smtp: %w: reply lines with codes %d and %d", proto.ErrRemoteViolation, code, c)
		}
		if text != "" && size < proto.MaxReplyText {
			texts = append(texts, text)
			size += len(text) + 1
		}
		if !more {
			break
		}
	}
	s := strconv.Itoa(code)
	if len(texts) > 0 {
		s += " " + strings.Join(texts, " ")
	}
	if len(s) > proto.MaxReplyText {
		s = s[:proto.MaxReplyText]
	}
	return reply{code: code, text: proto.OneLine(s)}, nil
}

// parseReplyLine splits "250-text" or "250 text" (or a bare "250"): the
// code, whether more lines follow, and the text.
func parseReplyLine(line []byte) (code int, more bool, text string, err error) {
	if len(line) < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' {
		return 0, false, "", fmt.Errorf("smtp: %w: not a reply line: %q", proto.ErrRemoteViolation, proto.Printable(string(line), 80))
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	if len(line) == 3 {
		return code, false, "", nil
	}
	switch line[3] {
	case ' ':
	case '-':
		more = true
	default:
		return 0, false, "", fmt.Errorf("smtp: %w: not a reply line: %q", proto.ErrRemoteViolation, proto.Printable(string(line), 80))
	}
	return code, more, string(line[4:]), nil
}

// countConn counts the bytes on the network, under TLS if any. In poll
// mode its Read takes only what the socket already holds (pollRead).
type countConn struct {
	net.Conn
	out, in int64
	poll    bool
}

// NetConn lets proto.MarkArrivals see the socket under the count.
func (c *countConn) NetConn() net.Conn { return c.Conn }

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out += int64(n)
	return n, err
}

func (c *countConn) Read(p []byte) (int, error) {
	if c.poll {
		n, err := pollRead(c.Conn, p)
		c.in += int64(n)
		return n, err
	}
	n, err := c.Conn.Read(p)
	c.in += int64(n)
	return n, err
}
