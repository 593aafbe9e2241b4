package proto

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Envelope is a message's sender and recipients as the client sent them.
// An empty Sender is the null sender (bounces).
type Envelope struct {
	Sender     string
	Recipients []string
}

// LogRecipients renders recipients for a log line: up to ten of them, then
// how many more, so a message to thousands stays one readable line.
func LogRecipients(rcpts []string) string {
	const shown = 10
	if len(rcpts) <= shown {
		return strings.Join(rcpts, ",")
	}
	return fmt.Sprintf("%s,... (%d more)", strings.Join(rcpts[:shown], ","), len(rcpts)-shown)
}

// Peer describes the client of a server session, for Received lines and
// logs.
type Peer struct {
	Protocol   string // "QMQP" or "QMTP"
	RemoteIP   string
	RemoteHost string // may be empty
	LocalHost  string // the server's own name
	Time       time.Time
}

// Backend takes messages from a protocol server. Both QMQP and QMTP send
// the message before the envelope, so a delivery first receives the message
// bytes and only then learns where they go.
type Backend interface {
	// Begin starts one delivery. An error makes the server answer Z for
	// the package without reading further into the store.
	Begin(ctx context.Context, peer Peer, size int64) (Delivery, error)
}

// Delivery receives one message. The server writes the message (LF line
// ends, exactly as to be stored) to it, then calls exactly one of Commit or
// Abort.
type Delivery interface {
	io.Writer
	// Commit is called after the client's final byte. It returns one
	// reply per recipient, in order; K only once the message is durably
	// stored or accepted by the program handed to.
	Commit(ctx context.Context, env Envelope) []Reply
	// Abort discards everything written: the client went away or broke
	// the protocol.
	Abort()
}

// MiscountedReplies is the Z a server answers when a Delivery's Commit
// returned got replies for want recipients (a broken Backend): temporary,
// so the client sends again and nothing is lost.
func MiscountedReplies(got, want int) Reply {
	return Z(fmt.Sprintf("sorry, internal error: %d replies for %d recipients (#4.3.0)", got, want))
}
