package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Conn is what a protocol server needs from its client connection. A
// net.Conn satisfies it; `serve --stdio` adapts stdin/stdout. The server
// never closes it: the caller does, after ServeConn returns.
type Conn interface {
	io.Reader
	io.Writer
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Errors a TimedConn read fails with, so a server can say why a session
// ended. They wrap the underlying timeout.
var (
	ErrIdleTimeout  = errors.New("idle timeout")
	ErrSessionLimit = errors.New("session time limit reached")
	ErrShutdown     = errors.New("server shutting down")
	// ErrDrained: the server is stopping and the session was between
	// units of work (QMTP packages), so it ended without losing any.
	ErrDrained = errors.New("server stopping between packages")
)

// TimedConn arms a fresh deadline before every Read and Write, so idle
// bounds inactivity rather than the whole transfer, and caps reads at the
// session's end. When ctx is cancelled, a blocked or later Read fails at
// once with ErrShutdown. Writes are bounded by idle only, never by the
// session end or ctx: replies a server already owes (QMTP's for queued
// packages) are still delivered after the client's time is up, because a
// lost reply makes the client send the message again.
type TimedConn struct {
	conn Conn
	ctx  context.Context
	idle time.Duration
	end  time.Time

	mu       sync.Mutex // orders deadline changes against ctx cancellation and draining
	stop     func() bool
	boundary bool          // the session waits for a new unit of work
	draining bool          // DrainOn's channel is closed
	done     chan struct{} // made by DrainOn, closed by Close: ends DrainOn's watchers
}

// DrainOn makes the session end when stop is closed, but only at a
// boundary (see AtBoundary): a read there then fails with ErrDrained, at
// once if one is blocked. Elsewhere reads go on, so a package under way is
// finished and answered; ctx still cuts everything.
func (t *TimedConn) DrainOn(stop <-chan struct{}) {
	if t.done == nil {
		t.done = make(chan struct{})
	}
	go func() {
		select {
		case <-stop:
			t.mu.Lock()
			t.draining = true
			if t.boundary {
				t.conn.SetReadDeadline(time.Unix(1, 0))
			}
			t.mu.Unlock()
		case <-t.done:
		}
	}()
}

// AtBoundary says whether the next read starts a new unit of work, where
// a draining server may end the session.
func (t *TimedConn) AtBoundary(b bool) {
	t.mu.Lock()
	t.boundary = b
	t.mu.Unlock()
}

// NewTimedConn wraps conn. idle and session of 0 or less mean
// DefaultTimeout and DefaultSessionLimit; the session starts now. Call
// Close when done to release the context watcher (it does not close conn).
func NewTimedConn(ctx context.Context, conn Conn, idle, session time.Duration) *TimedConn {
	if idle <= 0 {
		idle = DefaultTimeout
	}
	if session <= 0 {
		session = DefaultSessionLimit
	}
	t := &TimedConn{conn: conn, ctx: ctx, idle: idle, end: time.Now().Add(session)}
	t.stop = context.AfterFunc(ctx, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		// A deadline in the past wakes a Read blocked right now.
		t.conn.SetReadDeadline(time.Unix(1, 0))
	})
	return t
}

// Close stops watching the context. It does not close the connection.
func (t *TimedConn) Close() {
	t.stop()
	if t.done != nil {
		close(t.done)
	}
}

// Read reads from the connection with the idle deadline, capped at the
// session's end.
func (t *TimedConn) Read(p []byte) (int, error) {
	t.mu.Lock()
	if err := t.ctx.Err(); err != nil {
		t.mu.Unlock()
		return 0, fmt.Errorf("%w: %v", ErrShutdown, err)
	}
	atBoundary := t.boundary
	if atBoundary && t.draining {
		t.mu.Unlock()
		return 0, ErrDrained
	}
	now := time.Now()
	if !now.Before(t.end) {
		t.mu.Unlock()
		return 0, ErrSessionLimit
	}
	deadline := now.Add(t.idle)
	sessionCapped := false
	if deadline.After(t.end) {
		deadline, sessionCapped = t.end, true
	}
	t.conn.SetReadDeadline(deadline)
	t.mu.Unlock()

	n, err := t.conn.Read(p)
	if err != nil && isTimeout(err) {
		t.mu.Lock()
		drained := atBoundary && t.draining
		t.mu.Unlock()
		switch {
		case t.ctx.Err() != nil:
			err = fmt.Errorf("%w: %v", ErrShutdown, t.ctx.Err())
		case drained:
			err = ErrDrained
		case sessionCapped:
			err = fmt.Errorf("%w: %v", ErrSessionLimit, err)
		default:
			err = fmt.Errorf("%w (%v): %v", ErrIdleTimeout, t.idle, err)
		}
	}
	return n, err
}

// Write writes with the idle deadline.
func (t *TimedConn) Write(p []byte) (int, error) {
	t.conn.SetWriteDeadline(time.Now().Add(t.idle))
	n, err := t.conn.Write(p)
	if err != nil && isTimeout(err) {
		err = fmt.Errorf("%w (%v) writing: %v", ErrIdleTimeout, t.idle, err)
	}
	return n, err
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Linger bounds how long and how much Linger drains.
const (
	LingerTime  = 2 * time.Second
	LingerBytes = 1 << 20
)

// Linger is for a server that stops reading before the client has stopped
// sending (an immediate refusal, a protocol error in a pipelined stream).
// Closing a socket with unread input makes the kernel reset the
// connection, and a reset can destroy replies the client has not read
// yet. So Linger half-closes conn when it can (CloseWrite), then reads and
// discards what still arrives, for at most LingerTime and LingerBytes,
// before the caller closes it.
//
// On a plain socket it looks first (one read that never waits): a client
// that has closed its side already (end of stream) or whose connection is
// gone (reset) can send nothing more, so the close resets nothing, and
// Linger returns at once.
func Linger(conn Conn) {
	conn.SetReadDeadline(time.Now().Add(LingerTime))
	st, n := look(conn)
	if st == peerClosed {
		return
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.CopyN(io.Discard, conn, LingerBytes-int64(n))
}

// inputLeft is for a server that replied after reading all its client
// was to send (a QMQP package to its final comma): only a client that
// broke the protocol leaves input unread then. It looks (one read that
// never waits) and reports whether there is some, or whether it cannot
// tell (a TLS connection): then the caller lingers. With none, closed or
// not, the close sends an end of stream, not a reset, and the reply in
// flight arrives.
func inputLeft(conn Conn) bool {
	st, _ := look(conn)
	return st == peerSending || st == peerUnknown
}

// What look saw of the peer.
type peerState int

const (
	peerUnknown peerState = iota // conn is not a socket look may read
	peerClosed                   // end of stream or reset: nothing more comes
	peerQuiet                    // nothing unread now; the peer may still send
	peerSending                  // it read (and discarded) unread input
)

// look reads what is in conn's receive buffer without waiting, when
// conn is a TCP or Unix socket (non-blocking, as Go keeps them; not a TLS
// connection, whose bytes must go through it, nor a pipe, which may block),
// and says what it saw; n is how many bytes it discarded.
func look(conn Conn) (st peerState, n int) {
	var rc syscall.RawConn
	var err error
	switch c := conn.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
	case *net.UnixConn:
		rc, err = c.SyscallConn()
	default:
		return peerUnknown, 0
	}
	if err != nil {
		return peerUnknown, 0
	}
	bp := GetCopyBuf()
	defer PutCopyBuf(bp)
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), *bp)
		return true // one try: never wait here
	})
	switch {
	case err != nil: // the deadline passed, the connection closed
		return peerUnknown, 0
	case rerr == syscall.EAGAIN || rerr == syscall.EINTR:
		return peerQuiet, 0
	case rerr != nil:
		return peerClosed, 0 // reset, or not connected
	case n == 0:
		return peerClosed, 0 // end of stream
	}
	return peerSending, n
}
