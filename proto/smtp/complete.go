package smtp

// Bare paths (Server.CompletePath). go-smtp's parser refuses a path
// without a domain ("RCPT TO:<root>", even RFC 5321's "<Postmaster>")
// with 501 before a Session sees it, while a server may want to take
// one (sendmail -bs promises qmail-inject's rewrite: a bare box gets the
// default host). completePaths completes such an address on the command
// line itself, before go-smtp reads it; it never touches message text.
// What a bare box becomes is the caller's rule, not this package's.

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"sync"
	"time"

	"qbox/proto"
	"qbox/proto/server"
)

// completePaths returns conn with the bare address of every MAIL FROM and
// RCPT TO command line completed by complete (which must give an address
// with a domain, such as qmail-inject's rule in proto/qmail/message); the
// rest of the session passes unchanged. A completion that does not pass
// proto.CheckRecipient, or holds a space, '<' or '>', leaves the line as
// it was (go-smtp then answers 501): a hostile default host never reaches
// the command line.
//
// It tells commands from message text by the server's replies: from a 354
// until the next reply the client sends data, and a BDAT command's chunk
// passes as it is. This holds for Server.ServeConn without STARTTLS: its
// reads are lazy (it reads the line after a command only once it has
// answered the command, and the line after the final dot only once it
// has answered the data), and completePaths hands out one line per Read.
func completePaths(conn server.Conn, complete func(string) string) server.Conn {
	return &completeConn{conn: conn, in: bufio.NewReaderSize(conn, 16<<10), complete: complete}
}

type completeConn struct {
	conn     server.Conn
	in       *bufio.Reader
	complete func(string) string

	pending []byte // the rest of the line being handed out
	midLine bool   // the last fragment read did not end its line
	raw     int64  // bytes of a BDAT chunk still to pass

	mu        sync.Mutex
	data      bool   // a 354 was the last reply: the client sends data
	replyHead []byte // the first bytes of the reply line being written
}

func (c *completeConn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *completeConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

func (c *completeConn) inData() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.data
}

// Write passes the server's replies on and notes, at the end of each
// final reply line ("ddd text", or a bare "ddd"), whether it was a 354.
func (c *completeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for _, b := range p {
		if b == '\n' {
			if h := c.replyHead; len(h) == 3 || len(h) == 4 && (h[3] == ' ' || h[3] == '\r') {
				c.data = string(h[:3]) == "354"
			}
			c.replyHead = c.replyHead[:0]
			continue
		}
		if len(c.replyHead) < 4 {
			c.replyHead = append(c.replyHead, b)
		}
	}
	c.mu.Unlock()
	return c.conn.Write(p)
}

func (c *completeConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.raw > 0 {
		if int64(len(p)) > c.raw {
			p = p[:c.raw]
		}
		n, err := c.in.Read(p)
		c.raw -= int64(n)
		return n, err
	}
	frag, err := c.in.ReadSlice('\n')
	if len(frag) == 0 {
		if err == bufio.ErrBufferFull {
			err = nil
		}
		return 0, err
	}
	line := frag
	whole := !c.midLine && frag[len(frag)-1] == '\n'
	c.midLine = frag[len(frag)-1] != '\n'
	if whole && !c.inData() {
		line = c.command(frag)
	}
	n := copy(p, line)
	if n < len(line) {
		c.pending = append(c.pending[:0], line[n:]...)
	}
	return n, nil
}

// command returns a command line with its bare address completed, and
// notes a BDAT chunk to pass.
func (c *completeConn) command(line []byte) []byte {
	s := string(line)
	verb, arg, _ := strings.Cut(strings.TrimRight(s, "\r\n"), " ")
	var keyword string
	switch strings.ToUpper(verb) {
	case "MAIL":
		keyword = "FROM:"
	case "RCPT":
		keyword = "TO:"
	case "BDAT":
		// Whatever go-smtp makes of it, a chunk size that parses
		// means the bytes after it may be message text.
		if f := strings.Fields(arg); len(f) > 0 {
			if n, err := strconv.ParseUint(f[0], 10, 32); err == nil {
				c.raw = int64(n)
			}
		}
		return line
	default:
		return line
	}
	if len(arg) < len(keyword) || !strings.EqualFold(arg[:len(keyword)], keyword) {
		return line
	}
	start := len(verb) + 1 + len(keyword) // where the path begins in s
	for start < len(s) && (s[start] == ' ' || s[start] == '\t') {
		start++
	}
	end := start
	if start < len(s) && s[start] == '<' {
		start++
		end = strings.IndexByte(s[start:], '>')
		if end < 0 {
			return line
		}
		end += start
	} else {
		end = start + strings.IndexAny(s[start:], " \t\r\n")
		if end < start {
			end = len(s)
		}
	}
	addr := s[start:end]
	if addr == "" || strings.ContainsAny(addr, "@<> \t") {
		return line
	}
	full := c.complete(addr)
	if !strings.Contains(full, "@") || strings.ContainsAny(full, "<> \t") || proto.CheckRecipient(full) != nil {
		return line
	}
	var b bytes.Buffer
	b.WriteString(s[:start])
	b.WriteString(full)
	b.WriteString(s[end:])
	return b.Bytes()
}
