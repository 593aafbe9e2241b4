// Package earlywalk is the test double for issue 20's offset walk: a
// scripted server on 127.0.0.1:0 that answers after reading exactly n
// bytes of what a client sends, and a client connection that makes the
// order of events certain, whatever the scheduler does. Once the client
// has written exactly n bytes, the connection holds its next byte until
// the server's reply has reached the client (an event: the socket's count
// of bytes received, or the client's reader taking the reply), so a reply
// sent after n bytes is, for every n below the package's length, on the
// client's side before the package's final byte is handed to the kernel.
//
// Two ways for the client to see the reply, each leaving it one way to
// tell that it was early:
//
//   - Late: the client's reads wait until it has written everything, as
//     when a small package goes out in one write before the reader looks
//     (the bug of issue 20). Only the socket's count, read before the
//     final byte (proto.MarkArrivals), can tell.
//   - Live: the connection hides its socket (no count), and the client's
//     reader takes the reply while the writer is held. Only the reader's
//     own view (bytes handed over when the reply came) can tell.
package earlywalk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"qbox/proto"
)

// Mode is how the client's reader sees the reply (see the package doc).
type Mode int

const (
	Late Mode = iota
	Live
)

func (m Mode) String() string {
	if m == Late {
		return "late-reader"
	}
	return "live-reader"
}

// guard bounds every wait: a generous guard against a hang, never a
// measure.
const guard = time.Minute

// Server accepts connections on 127.0.0.1:0 and runs the next script
// given to Next on each, then reads until the client closes.
type Server struct {
	Addr    string
	scripts chan func(net.Conn) error
	errs    chan error
}

// Listen starts a Server that lives until the test ends.
func Listen(t testing.TB) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String(), scripts: make(chan func(net.Conn) error, 1), errs: make(chan error, 1)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			script := <-s.scripts
			err = script(c)
			io.Copy(io.Discard, c) // the rest, until the client closes
			c.Close()
			s.errs <- err
		}
	}()
	return s
}

// Next sets the script of the next connection.
func (s *Server) Next(script func(net.Conn) error) { s.scripts <- script }

// Done waits for the script of the last connection to end (the client
// has closed) and returns its error.
func (s *Server) Done() error {
	select {
	case err := <-s.errs:
		return err
	case <-time.After(guard):
		return errors.New("the server's session never ended")
	}
}

// Step is one step of a script: read exactly Read bytes, then write Write.
type Step struct {
	Read  int64
	Write []byte
}

// Run plays steps on c.
func Run(c net.Conn, steps ...Step) error {
	for _, st := range steps {
		if _, err := io.CopyN(io.Discard, c, st.Read); err != nil {
			return fmt.Errorf("reading %d bytes: %w", st.Read, err)
		}
		if len(st.Write) > 0 {
			if _, err := c.Write(st.Write); err != nil {
				return err
			}
		}
	}
	return nil
}

// Gate holds a client's writes at offset At until the server's stream up
// to ReplyEnd has reached the client (Late: the socket counts it; Live:
// the reader has taken a byte past ReplyStart and come back for more, or
// the client gives up writing), and, Late, the client's reads until Total
// bytes are written. The hold comes before the Write that would carry
// byte At returns — so before the client can go on to its final byte —
// or, with Boundary (At is where a package starts, the end of a write),
// at the start of the next Write, so that the write ending the previous
// package returns and its replies can be taken.
type Gate struct {
	Mode       Mode
	At         int64 // hold once this many bytes are written; -1: never
	Boundary   bool  // hold at the start of the next Write, not at the end of this one
	ReplyStart int64 // the stream offset of the reply's first byte
	ReplyEnd   int64 // just past its last byte
	Total      int64 // everything the client will write

	tcp      *net.TCPConn
	written  int64 // writer only
	held     bool
	opened   chan struct{} // Late: reads may go on
	openOnce sync.Once
	read     atomic.Int64
	again    chan struct{} // Live: the reader came back after the reply's first byte
	againMu  sync.Once
	stopped  chan struct{} // the client set a write deadline in the past, or closed
	stopMu   sync.Once
	closed   chan struct{}
	closeMu  sync.Once
	err      atomic.Pointer[error]
}

// Dial returns a proto.DialFunc that connects and wraps the connection
// in g (one connection per Gate).
func (g *Gate) Dial() proto.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		g.tcp = c.(*net.TCPConn)
		g.opened = make(chan struct{})
		g.again = make(chan struct{})
		g.stopped = make(chan struct{})
		g.closed = make(chan struct{})
		if g.Mode == Late {
			return &lateConn{g}, nil
		}
		return &liveConn{g}, nil
	}
}

// Err is the gate's own failure (its wait timed out), if any.
func (g *Gate) Err() error {
	if p := g.err.Load(); p != nil {
		return *p
	}
	return nil
}

// lateConn shows its socket (NetConn), so the client can read the count.
type lateConn struct{ *Gate }

func (c *lateConn) NetConn() net.Conn { return c.tcp }

// liveConn hides it: the count is unknown to the client.
type liveConn struct{ *Gate }

func (g *Gate) LocalAddr() net.Addr               { return g.tcp.LocalAddr() }
func (g *Gate) RemoteAddr() net.Addr              { return g.tcp.RemoteAddr() }
func (g *Gate) SetReadDeadline(t time.Time) error { return g.tcp.SetReadDeadline(t) }
func (g *Gate) SetDeadline(t time.Time) error     { g.noteDeadline(t); return g.tcp.SetDeadline(t) }
func (g *Gate) SetWriteDeadline(t time.Time) error {
	g.noteDeadline(t)
	return g.tcp.SetWriteDeadline(t)
}

// noteDeadline: a deadline in the past is the client stopping its writer.
func (g *Gate) noteDeadline(t time.Time) {
	if !t.IsZero() && t.Before(time.Now()) {
		g.stopMu.Do(func() { close(g.stopped) })
	}
}

func (g *Gate) Close() error {
	g.closeMu.Do(func() { close(g.closed) })
	g.stopMu.Do(func() { close(g.stopped) })
	g.open()
	return g.tcp.Close()
}

func (g *Gate) open() { g.openOnce.Do(func() { close(g.opened) }) }

func (g *Gate) Write(p []byte) (int, error) {
	done := 0
	first := true
	for {
		if g.written == g.At && !g.held && (first || !g.Boundary) {
			g.held = true
			if err := g.wait(); err != nil {
				g.open()
				return done, err
			}
		}
		first = false
		if len(p) == 0 {
			return done, nil
		}
		chunk := p
		if g.written < g.At && int64(len(chunk)) > g.At-g.written {
			chunk = chunk[:g.At-g.written]
		}
		n, err := g.tcp.Write(chunk)
		done += n
		g.written += int64(n)
		p = p[n:]
		if g.written >= g.Total {
			g.open()
		}
		if err != nil {
			g.open()
			return done, err
		}
	}
}

// wait holds the writer until the reply is on the client's side. The
// client giving up (a write deadline in the past, Close) ends the hold
// with an error for the write; only the guard is the gate's own failure.
func (g *Gate) wait() error {
	// The client corks the bytes before a final byte (proto.Cork) so
	// that they leave with it; held here, they must go out now, or the
	// server never has its n bytes. Clearing the cork pushes them.
	proto.Cork(g.tcp)()
	end := time.Now().Add(guard)
	if g.Mode == Live {
		t := time.NewTimer(guard)
		defer t.Stop()
		select {
		case <-g.again:
			return nil
		case <-g.stopped:
			return net.ErrClosed
		case <-t.C:
			err := errors.New("gate: the client never took the reply")
			g.err.Store(&err)
			return err
		}
	}
	// The count moves when the bytes reach the socket; nothing else
	// signals it, so look again until it has (the guard only bounds a
	// hang).
	for proto.MarkArrivals(g.tcp).Offset < g.ReplyEnd {
		if time.Now().After(end) {
			err := errors.New("gate: the reply never reached the socket")
			g.err.Store(&err)
			return err
		}
		select {
		case <-g.stopped:
			return net.ErrClosed
		case <-time.After(50 * time.Microsecond):
		}
	}
	return nil
}

func (g *Gate) Read(p []byte) (int, error) {
	if g.read.Load() > g.ReplyStart {
		// The reader has dealt with the bytes it had and comes back.
		g.againMu.Do(func() { close(g.again) })
	}
	if g.Mode == Late {
		select {
		case <-g.opened:
		case <-g.closed:
			return 0, net.ErrClosed
		}
	}
	n, err := g.tcp.Read(p)
	g.read.Add(int64(n))
	return n, err
}
