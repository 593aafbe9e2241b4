package server

import (
	"container/list"
	"context"
	"errors"
	"sync"
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
	DefaultMaxConns = 200
	// DefaultWaitingFactor sizes the waiting room: DefaultWaitingFactor ×
	// the most sessions may wait for a free slot, so that a burst of six
	// times --max-conns clients at once is served in order, not refused.
	DefaultWaitingFactor = 5
	DefaultQueueWait     = 10 * time.Second
)

// ConnLimit bounds the connections of one or more servers together: give
// the QMQP, QMTP and SMTP servers the same one and at most Max sessions
// run on all of them at once, as a shared Budget bounds their envelopes.
//
// A connection beyond Max waits in a waiting room of Waiting places, in
// the order the connections arrived, for the next free slot, up to
// QueueWait; one that finds the room full, or whose wait is over, is
// refused (a temporary failure for the client). Beside them at most Max
// connections linger (StartLinger): refusals of clients outside the
// access list and sessions whose client may still be sending. So the
// connections a server holds are never more than 2 × Max + Waiting,
// however many clients come.
type ConnLimit struct {
	max, waiting int
	queueWait    time.Duration

	mu        sync.Mutex
	held      int        // admitted connections not yet gone: at most max + waiting
	running   int        // of them, holding a session slot: at most max
	queue     *list.List // of *Ticket, waiting for a slot, first come first
	lingering int        // connections lingering (StartLinger): at most max
}

// NewConnLimit returns a limit of max sessions (DefaultMaxConns if 0 or
// less) with a waiting room of waiting places (DefaultWaitingFactor × max
// if 0; none if less than 0) whose connections wait up to queueWait each
// (DefaultQueueWait if 0 or less).
func NewConnLimit(max, waiting int, queueWait time.Duration) *ConnLimit {
	if max <= 0 {
		max = DefaultMaxConns
	}
	switch {
	case waiting == 0:
		waiting = DefaultWaitingFactor * max
	case waiting < 0:
		waiting = 0
	}
	if queueWait <= 0 {
		queueWait = DefaultQueueWait
	}
	return &ConnLimit{max: max, waiting: waiting, queueWait: queueWait, queue: list.New()}
}

// Max is the most sessions at once.
func (c *ConnLimit) Max() int { return c.max }

// Waiting is the size of the waiting room.
func (c *ConnLimit) Waiting() int { return c.waiting }

// QueueWait is the longest a connection waits for a slot.
func (c *ConnLimit) QueueWait() time.Duration { return c.queueWait }

// Counts reports the connections admitted now (running or waiting, see
// Enter) and, of them, those holding a slot and those waiting.
func (c *ConnLimit) Counts() (held, running, waiting int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held, c.running, c.queue.Len()
}

// A Ticket is one admitted connection's place: a session slot or a
// place in the waiting room. Leave gives it up.
type Ticket struct {
	c       *ConnLimit
	arrived time.Time
	elem    *list.Element // in c.queue while waiting
	ready   chan struct{} // closed when a slot is handed over
	slot    bool          // holds a session slot
	gone    bool          // Leave was called
}

// Enter admits a connection that has just arrived: it returns a ticket
// holding a session slot when one is free and nobody waits before it, a
// place at the end of the waiting room otherwise, or nil when every slot
// and every place are taken (refuse the connection at once). Call it in
// the order connections arrive (the accept loop): that is the order the
// waiting ones get their slots.
func (c *ConnLimit) Enter() *Ticket {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held >= c.max+c.waiting {
		return nil
	}
	t := &Ticket{c: c, arrived: time.Now()}
	if c.running < c.max && c.queue.Len() == 0 {
		c.running++
		t.slot = true
	} else {
		if c.queue.Len() >= c.waiting { // released slots whose tickets have not left
			return nil
		}
		t.ready = make(chan struct{})
		t.elem = c.queue.PushBack(t)
	}
	c.held++
	return t
}

// Wait waits until the ticket holds a session slot, for at most QueueWait
// after it entered, or until ctx is done, and reports whether it got one.
func (t *Ticket) Wait(ctx context.Context) bool {
	c := t.c
	c.mu.Lock()
	if t.slot || t.gone {
		c.mu.Unlock()
		return t.slot
	}
	c.mu.Unlock()
	timer := time.NewTimer(c.queueWait - time.Since(t.arrived))
	defer timer.Stop()
	select {
	case <-t.ready:
	case <-timer.C:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.slot && t.elem != nil { // not handed one: out of the line
		c.queue.Remove(t.elem)
		t.elem = nil
	}
	return t.slot
}

// Release gives back the ticket's session slot, if it holds one, to the
// first connection waiting; its place is held until Leave.
func (t *Ticket) Release() {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	t.release()
}

func (t *Ticket) release() {
	c := t.c
	if !t.slot {
		return
	}
	t.slot = false
	if e := c.queue.Front(); e != nil {
		next := c.queue.Remove(e).(*Ticket)
		next.elem = nil
		next.slot = true
		close(next.ready)
		return
	}
	c.running--
}

// Leave gives up the ticket: its slot goes to the first connection
// waiting, its place in the waiting room to the next to arrive. It may be
// called more than once.
func (t *Ticket) Leave() {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.gone {
		return
	}
	t.gone = true
	t.release()
	if t.elem != nil {
		c.queue.Remove(t.elem)
		t.elem = nil
	}
	c.held--
}

// StartLinger takes one of the Max places for a connection that lingers
// (a reply written, the connection kept open a little so that what the
// client still sends does not reset it and destroy the reply); it
// reports false when all are taken: close without lingering. EndLinger
// gives the place back.
func (c *ConnLimit) StartLinger() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lingering >= c.max {
		return false
	}
	c.lingering++
	return true
}

// EndLinger gives back a place StartLinger took.
func (c *ConnLimit) EndLinger() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lingering--
}
