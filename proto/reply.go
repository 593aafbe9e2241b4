// Package proto is the wire vocabulary the QMQP, QMTP and SMTP clients
// and servers share: the K/Z/D reply, the envelope, the interface between
// a protocol server and the store or program that takes the message
// (Backend, Delivery, Peer), dialing (Dialer, ConnectError), the address
// checks, the Received line, the checks of a client's socket (arrival,
// cork), and the signal that stops a flush from starting new messages.
// The serving side's kit (accept loop, limits, connection slots) is
// package proto/server.
package proto

import (
	"errors"
	"fmt"
	"strings"
)

// Status is the first byte of a QMQP or QMTP reply.
type Status byte

const (
	OK        Status = 'K' // accepted: the server has taken responsibility
	Temporary Status = 'Z' // temporary failure: try again later
	Permanent Status = 'D' // permanent failure: bounce
)

// Reply is one K, Z or D answer with its human-readable text.
type Reply struct {
	Status Status
	Text   string
}

// MaxReplyText bounds a reply netstring read from the network.
const MaxReplyText = 8192

// ErrBadReply is wrapped by every error about a malformed reply.
var ErrBadReply = errors.New("malformed reply")

// ParseReply validates a reply netstring's body: non-empty, first byte K, Z
// or D. CR, LF and NUL in the text become spaces, so a peer's reply can
// never split a line where it is shown, logged or stored (a bounce's
// Diagnostic-Code, the spool's last error).
func ParseReply(b []byte) (Reply, error) {
	if len(b) == 0 {
		return Reply{}, fmt.Errorf("%w: empty reply", ErrBadReply)
	}
	switch s := Status(b[0]); s {
	case OK, Temporary, Permanent:
		return Reply{Status: s, Text: OneLine(string(b[1:]))}, nil
	default:
		return Reply{}, fmt.Errorf("%w: unknown status byte %q", ErrBadReply, Printable(string(b[:1]), 1))
	}
}

// K, Z and D build replies.
func K(text string) Reply { return Reply{OK, text} }
func Z(text string) Reply { return Reply{Temporary, text} }
func D(text string) Reply { return Reply{Permanent, text} }

// Repeat returns n copies of r: the one reply every recipient of a
// message gets when the message as a whole succeeds or fails.
func Repeat(n int, r Reply) []Reply {
	out := make([]Reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// Bytes returns the reply's wire body (status byte and text).
func (r Reply) Bytes() []byte { return append([]byte{byte(r.Status)}, r.Text...) }

// String returns the reply as it is on the wire, status byte first.
func (r Reply) String() string { return string(r.Status) + r.Text }

// Err returns nil for K, and otherwise an *Error carrying the reply.
func (r Reply) Err() error {
	if r.Status == OK {
		return nil
	}
	return &Error{Reply: r}
}

// Error is a Z or D reply as a Go error, so callers can tell a temporary
// failure from a permanent one with errors.As.
type Error struct {
	Reply Reply
}

func (e *Error) Error() string {
	kind := "temporary"
	if e.Reply.Status == Permanent {
		kind = "permanent"
	}
	return fmt.Sprintf("%s failure: %s", kind, Printable(e.Reply.Text, 2000))
}

// Temporary reports whether the failure was a Z.
func (e *Error) Temporary() bool { return e.Reply.Status != Permanent }

// OneLine replaces CR, LF and NUL with spaces: text from a peer keeps
// its bytes otherwise (UTF-8 included) but can never end a line.
func OneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\x00") {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if c == '\r' || c == '\n' || c == 0 {
			b[i] = ' '
		}
	}
	return string(b)
}

// Printable makes untrusted server text safe for a terminal or a log line:
// bytes outside printable ASCII become '?' (as serialqmtp does) and the
// result is cut at max bytes.
func Printable(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 32 || c > 126 {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}
