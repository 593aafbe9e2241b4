package proto

import (
	"context"
	"errors"
	"time"
)

// ErrServerClosed is what a QMQP, QMTP or SMTP server's Serve returns
// after its Shutdown or Close was called.
var ErrServerClosed = errors.New("server closed")

// NotAuthorized is the text of the refusal a client outside a server's
// access list gets at once: a QMQP or QMTP D reply, an SMTP 554 greeting.
const NotAuthorized = "sorry, not authorized to use this service (#5.7.1)"

// Connection limit defaults.
const (
	DefaultMaxConns  = 200
	DefaultQueueWait = 10 * time.Second
)

// ConnLimit bounds the sessions of one or more servers together: give the
// QMQP, QMTP and SMTP servers the same one and at most Max sessions run
// on all of them at once, as a shared Budget bounds their envelopes. A
// connection beyond Max waits up to QueueWait for a free slot, at most
// Max of them wait, and the others are closed without a reply at once (a
// temporary failure for the client).
type ConnLimit struct {
	max       int
	queueWait time.Duration
	slots     chan struct{} // one token per running session
	waiting   chan struct{} // one token per connection waiting for a slot
}

// NewConnLimit returns a limit of max sessions (DefaultMaxConns if 0 or
// less) whose surplus waits up to queueWait (DefaultQueueWait if 0 or
// less).
func NewConnLimit(max int, queueWait time.Duration) *ConnLimit {
	if max <= 0 {
		max = DefaultMaxConns
	}
	if queueWait <= 0 {
		queueWait = DefaultQueueWait
	}
	return &ConnLimit{max: max, queueWait: queueWait, slots: make(chan struct{}, max), waiting: make(chan struct{}, max)}
}

// Max is the most sessions at once.
func (c *ConnLimit) Max() int { return c.max }

// Acquire takes a session slot, waiting up to QueueWait (or until ctx is
// done) if all are busy, and reports whether it got one. Release gives it
// back.
func (c *ConnLimit) Acquire(ctx context.Context) bool {
	select {
	case c.slots <- struct{}{}:
		return true
	default:
	}
	select {
	case c.waiting <- struct{}{}:
	default:
		return false // the waiting room is full as well
	}
	defer func() { <-c.waiting }()
	t := time.NewTimer(c.queueWait)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// Release gives back a slot Acquire took.
func (c *ConnLimit) Release() { <-c.slots }
