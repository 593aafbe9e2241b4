// Package qmqp implements D. J. Bernstein's Quick Mail Queuing Protocol
// (cr.yp.to/proto/qmqp.html): one message, one envelope and one K/Z/D reply
// per connection.
package qmqp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"qbox/netstring"
	"qbox/proto"
)

// DefaultPort is QMQP's TCP port.
const DefaultPort = "628"

// Client sends messages to a list of QMQP servers.
type Client struct {
	// Servers are tried in order; a server is skipped only when the
	// connection to it fails. Each is host or host:port ([v6]:port).
	Servers        []string
	ConnectTimeout time.Duration // per server; 0 means 10s
	// Timeout bounds each write, and the whole wait for the reply
	// once the message is sent; 0 means 60s.
	Timeout time.Duration
	// Dial overrides how connections are made (tests, link simulator).
	Dial proto.DialFunc
}

// SessionError means the connection broke (or the reply was malformed)
// after bytes were sent. The outcome is unknown, so it is a temporary
// failure, and the message must not be sent to another server now: that
// could deliver it twice.
type SessionError struct {
	Server string
	Err    error
}

func (e *SessionError) Error() string {
	return fmt.Sprintf("qmqp: %s: %v", e.Server, e.Err)
}

func (e *SessionError) Unwrap() error { return e.Err }

// WithDefaultPort adds QMQP's port to an address that has none; IPv6
// literals go in brackets ("[::1]" or "[::1]:628").
func WithDefaultPort(server, port string) string {
	if _, _, err := net.SplitHostPort(server); err == nil {
		return server
	}
	if len(server) > 1 && server[0] == '[' && server[len(server)-1] == ']' {
		server = server[1 : len(server)-1]
	}
	return net.JoinHostPort(server, port)
}

// Send delivers one message of exactly size bytes read from msg. The
// error is nil only when the server said K: a Z or D comes back as a
// *proto.Error (Temporary tells them apart) beside the reply itself, so a
// refusal cannot pass for success; a *proto.ConnectError means nothing
// was sent, a *SessionError that the outcome is unknown.
func (c *Client) Send(ctx context.Context, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error) {
	addrs := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		addrs[i] = WithDefaultPort(s, DefaultPort)
	}
	d := proto.Dialer{Dial: c.Dial, Timeout: c.ConnectTimeout, Protocol: "qmqp"}
	conn, i, err := d.DialFirst(ctx, addrs, nil)
	if err != nil {
		return proto.Reply{}, err
	}
	defer conn.Close()
	reply, err := exchange(ctx, conn, env, msg, size, c.Timeout)
	if err != nil {
		return proto.Reply{}, &SessionError{Server: addrs[i], Err: err}
	}
	return reply, reply.Err()
}

// ErrEarlyReply is wrapped by the error of a session whose server said K
// before the message's final byte was handed to the kernel: it cannot
// have received the message, so the K is no K. "Before" is judged at the
// socket: the final byte goes in a write of its own, and a reply whose
// first byte had reached the socket when that write started (the kernel's
// count, proto.MarkArrivals) is early however late the reader took it;
// where the count is unknown (not a TCP socket), a reply read before the
// final byte was handed over is. An early Z or D, a server refusing, is
// honoured.
var ErrEarlyReply = errors.New("the server said K before the message was sent in full")

// Exchange runs one QMQP session on an open connection: it sends the
// package while watching for the reply, and validates it. timeout bounds
// each write and the whole wait for the reply after the final byte (0
// means 60s); a server trickling its reply cannot stretch it. conn must
// be fresh, nothing read from it yet: the reply is judged as starting at
// the stream's first byte.
func Exchange(conn net.Conn, env proto.Envelope, msg io.Reader, size int64, timeout time.Duration) (proto.Reply, error) {
	return exchange(context.Background(), conn, env, msg, size, timeout)
}

// ExchangeContext is Exchange with a context: cancelling ctx ends the
// session at once.
func ExchangeContext(ctx context.Context, conn net.Conn, env proto.Envelope, msg io.Reader, size int64, timeout time.Duration) (proto.Reply, error) {
	return exchange(ctx, conn, env, msg, size, timeout)
}

type readResult struct {
	reply proto.Reply
	err   error
	// early: the reply's first byte arrived before the final byte of
	// the package was handed to the kernel.
	early bool
}

func exchange(ctx context.Context, conn net.Conn, env proto.Envelope, msg io.Reader, size int64, timeout time.Duration) (proto.Reply, error) {
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	total := netstring.Size(PackageSize(env, size))
	w := &exchangeWriter{ctx: ctx, conn: conn, timeout: timeout, total: total, stop: make(chan struct{})}
	// The reader runs while the package is written: a server may refuse
	// early (and stop reading), and a reply before the final byte must
	// be seen as early. Until the package is sent the read has no
	// deadline; the writer's timeout bounds that phase.
	conn.SetReadDeadline(time.Time{})
	written := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(w, 64<<10)
		err := WritePackage(bw, env, msg, size)
		if err == nil {
			err = bw.Flush()
		}
		written <- err
	}()
	replied := make(chan readResult, 1)
	go func() {
		r := &exchangeReader{conn: conn, w: w, total: total}
		reply, err := ReadReply(r)
		replied <- readResult{reply: reply, err: err, early: r.early}
	}()
	stopCtx := context.AfterFunc(ctx, func() {
		w.halt()
		conn.SetReadDeadline(time.Unix(1, 0))
	})
	defer stopCtx()

	var res readResult
	select {
	case werr := <-written:
		if werr != nil {
			// Wake the reader: a refusal already here still counts.
			conn.SetReadDeadline(time.Unix(1, 0))
			res = <-replied
			if res.err == nil && res.reply.Status != proto.OK {
				return res.reply, nil
			}
			return proto.Reply{}, writeError(ctx, werr)
		}
		// The wait for the reply starts now, and this is its deadline.
		conn.SetReadDeadline(time.Now().Add(timeout))
		res = <-replied
		if res.err != nil {
			return proto.Reply{}, readError(ctx, res.err)
		}
	case res = <-replied:
		// The server spoke (or went away) before the writer finished.
		if res.err != nil || res.early || res.reply.Status != proto.OK {
			w.halt()
			werr := <-written
			if res.err != nil {
				if werr != nil && peerClosed(werr) {
					return proto.Reply{}, fmt.Errorf("%w (while sending: %v)", ErrNoReply, werr)
				}
				return proto.Reply{}, readError(ctx, res.err)
			}
			if res.reply.Status != proto.OK {
				return res.reply, nil // an early refusal is honoured
			}
			return proto.Reply{}, fmt.Errorf("%w: %w", proto.ErrBadReply, ErrEarlyReply)
		}
		// A K that came while the write carrying the final byte was
		// under way: it counts if that write succeeds.
		if werr := <-written; werr != nil {
			return proto.Reply{}, fmt.Errorf("%w: %w (the last write failed: %v)", proto.ErrBadReply, ErrEarlyReply, werr)
		}
	}
	// The final byte was taken; its mark, stored before it was handed
	// over, says whether the reply had reached the socket by then.
	if res.reply.Status == proto.OK && (res.early || w.arrivedEarly()) {
		return proto.Reply{}, fmt.Errorf("%w: %w", proto.ErrBadReply, ErrEarlyReply)
	}
	return res.reply, nil
}

func writeError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("sending: %w", ctx.Err())
	}
	if peerClosed(err) {
		return fmt.Errorf("%w (while sending: %v)", ErrNoReply, err)
	}
	return fmt.Errorf("sending: %w", err)
}

func readError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("waiting for the reply: %w", ctx.Err())
	}
	return err
}

// PackageSize is the length of the outer netstring's body.
func PackageSize(env proto.Envelope, size int64) int64 {
	n := netstring.Size(size) + netstring.Size(int64(len(env.Sender)))
	for _, r := range env.Recipients {
		n += netstring.Size(int64(len(r)))
	}
	return n
}

// WritePackage writes netstring(netstring(msg) netstring(sender)
// netstring(rcpt)...), streaming the message body.
func WritePackage(w io.Writer, env proto.Envelope, msg io.Reader, size int64) error {
	nw := netstring.NewWriter(w)
	if err := nw.WriteHeader(PackageSize(env, size)); err != nil {
		return err
	}
	if err := nw.WriteFrom(size, msg); err != nil {
		return err
	}
	if err := nw.WriteString(env.Sender); err != nil {
		return err
	}
	for _, r := range env.Recipients {
		if err := nw.WriteString(r); err != nil {
			return err
		}
	}
	return nw.WriteTrailer()
}

// ReadReply reads one reply netstring and validates it. A connection
// closed without a reply, a malformed netstring, an empty reply or an
// unknown status byte is an error (a temporary failure for the caller).
func ReadReply(r io.Reader) (proto.Reply, error) {
	cr := &countingReader{r: r}
	nr := netstring.NewReader(bufio.NewReaderSize(cr, 512))
	b, err := nr.ReadBytes(proto.MaxReplyText)
	if err != nil {
		if errors.Is(err, netstring.ErrUnexpectedEOF) {
			if cr.n == 0 {
				return proto.Reply{}, ErrNoReply
			}
			return proto.Reply{}, fmt.Errorf("%w: connection closed in the middle of the reply", proto.ErrBadReply)
		}
		if errors.Is(err, netstring.ErrTooLong) {
			return proto.Reply{}, fmt.Errorf("%w: reply longer than %d bytes", proto.ErrBadReply, proto.MaxReplyText)
		}
		if cr.n == 0 && peerClosed(err) {
			return proto.Reply{}, fmt.Errorf("%w (%v)", ErrNoReply, err)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return proto.Reply{}, fmt.Errorf("no reply: %w", err)
		}
		if errors.Is(err, netstring.ErrGrammar) {
			return proto.Reply{}, fmt.Errorf("%w: %v", proto.ErrBadReply, err)
		}
		return proto.Reply{}, fmt.Errorf("reading the reply: %w", err)
	}
	return proto.ParseReply(b)
}

// ErrNoReply: the server closed the connection without answering. The
// message may or may not have been queued: a temporary failure.
var ErrNoReply = errors.New("connection closed without a reply")

// peerClosed: the server closed (or reset) the connection. Which of the two
// the client sees depends on timing, so both read as "no reply".
func peerClosed(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// countingReader tells "nothing at all" from "a reply cut short".
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// exchangeWriter counts the bytes handed to the kernel and arms the write
// timeout before every write (a write that stalls that long fails). The
// package's final byte goes in a write of its own, and just before it the
// kernel's count of bytes received is marked: any reply byte below it was
// readable before the package was complete.
type exchangeWriter struct {
	ctx      context.Context
	conn     net.Conn
	timeout  time.Duration
	total    int64        // the package's length on the wire
	pos      int64        // bytes the kernel took (the writer's own)
	started  atomic.Int64 // bytes handed to (or being handed to) the kernel
	mark     atomic.Pointer[proto.ArrivalMark]
	uncork   func() // set while the bytes before the final one wait for it
	stop     chan struct{}
	stopOnce sync.Once
}

// arrivedEarly says whether the reply, which starts at the stream's first
// byte, had reached the socket before the final byte was handed over.
// Meaningful once the final write has returned (the mark is stored before
// it starts); no mark, or an unknown one, says no.
func (w *exchangeWriter) arrivedEarly() bool {
	m := w.mark.Load()
	return m != nil && m.Early(0)
}

// halt makes the current and every later write fail at once.
func (w *exchangeWriter) halt() {
	w.stopOnce.Do(func() {
		close(w.stop)
		w.conn.SetWriteDeadline(time.Unix(1, 0))
	})
}

func (w *exchangeWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk, final := p, false
		if left := w.total - w.pos; left >= 1 && int64(len(chunk)) >= left {
			if left > 1 {
				chunk = chunk[:left-1] // all but the final byte
				if w.uncork == nil {
					// They leave with it, not before (proto.Cork).
					w.uncork = proto.Cork(w.conn)
				}
			} else {
				chunk, final = chunk[:1], true
			}
		}
		n, err := w.write(chunk, final)
		written += n
		w.pos += int64(n)
		p = p[n:]
		if w.uncork != nil && (final || err != nil) {
			w.uncork()
			w.uncork = nil
		}
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func (w *exchangeWriter) write(p []byte, final bool) (int, error) {
	w.started.Add(int64(len(p)))
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	// Checked after arming, so a halt racing with it is never lost.
	select {
	case <-w.stop:
		w.started.Add(-int64(len(p)))
		if err := w.ctx.Err(); err != nil {
			return 0, err
		}
		return 0, errors.New("stopped: the server has answered")
	default:
	}
	if final {
		m := proto.MarkArrivals(w.conn)
		w.mark.Store(&m)
	}
	n, err := w.conn.Write(p)
	w.started.Add(int64(n - len(p)))
	return n, err
}

// exchangeReader notes whether the reply's first byte came before the
// package's final byte was handed to the kernel.
type exchangeReader struct {
	conn  net.Conn
	w     *exchangeWriter
	total int64
	seen  bool
	early bool
}

func (r *exchangeReader) Read(p []byte) (int, error) {
	n, err := r.conn.Read(p)
	if n > 0 && !r.seen {
		r.seen = true
		r.early = r.w.started.Load() < r.total
	}
	return n, err
}
