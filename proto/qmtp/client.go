package qmtp

// The QMTP client: one connection carries many packages, pipelined. A
// writer goroutine streams packages while the caller's goroutine reads
// replies, so neither side can fill the other's socket buffer and wait
// forever (QMTP §4: a pipelining client "must continuously watch" for
// responses). Every recipient gets exactly one proto.Result: the server's K, Z
// or D, or a Z made up here when the server's reply never came.
//
// A reply counts only for a package whose final byte the kernel has taken:
// a server cannot have received a message before that, so a reply arriving
// earlier, or a reply beyond the recipients sent, is a lie or a desynchronised
// stream. Either ends the session as a protocol violation; nothing it
// "answered" counts, so the caller removes nothing that was not fully sent
// and answered.
//
// "Earlier" is judged at the socket, not by when the reader gets round to
// the bytes: the final byte of each package goes to the kernel in a write
// of its own, and just before it the writer reads the kernel's count of
// bytes received (proto.MarkArrivals). A reply for that package whose first
// byte lies below the count was readable before the package was complete:
// early, whatever its status (QMTP lets a server say nothing before the
// final byte, so an early Z or D is no more believed than an early K; the
// recipients get a Z made up here). Where the count is unknown (not a TCP
// socket), the reader's own view stays: a reply read while the final byte
// was not yet handed to the kernel is early.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"qbox/netstring"
	"qbox/proto"
)

// Client defaults. The write timeout is serialqmtp's; the connect timeout
// is tcpclient's 2+58 seconds; the read timeout is the deadline of each
// reply once it is owed (see Client.ReadTimeout).
const (
	ClientConnectTimeout = 60 * time.Second
	ClientWriteTimeout   = 73 * time.Second
	ClientReadTimeout    = 10 * time.Minute
)

// WireSize is the number of bytes m takes on the wire as a QMTP package.
func WireSize(m *proto.Message) int64 {
	return netstring.Size(m.Size+1) + netstring.Size(int64(len(m.Sender))) + netstring.Size(recipientListSize(m))
}

func recipientListSize(m *proto.Message) int64 {
	var n int64
	for _, r := range m.Recipients {
		n += netstring.Size(int64(len(r)))
	}
	return n
}

// Client delivers packages over QMTP.
type Client struct {
	ConnectTimeout time.Duration // 0: ClientConnectTimeout
	WriteTimeout   time.Duration // per write; 0: ClientWriteTimeout
	// ReadTimeout is the deadline for each reply, 0: ClientReadTimeout.
	// A reply is owed once its package's final byte has been written;
	// it must then be complete within ReadTimeout of the later of the
	// previous reply and the client's last write. A server may hold
	// replies while the client is still sending (QMTP lets it), so time
	// spent writing never counts; bytes trickling from the server never
	// extend the deadline.
	ReadTimeout time.Duration
	// Dial overrides how connections are made.
	Dial proto.DialFunc
}

// Connect connects to the first of addrs (host:port) that accepts. Only a
// failed connect moves on to the next address.
func (c *Client) Connect(ctx context.Context, addrs []string) (net.Conn, string, error) {
	d := proto.Dialer{Dial: c.Dial, Timeout: clientOrDefault(c.ConnectTimeout, ClientConnectTimeout), Protocol: "qmtp"}
	conn, i, err := d.DialFirst(ctx, addrs, nil)
	if err != nil {
		return nil, "", err
	}
	return conn, addrs[i], nil
}

// Deliver connects to the first reachable of addrs and sends pkgs there
// (see Send). When no address accepts it returns a *proto.ConnectError and
// delivers no result.
func (c *Client) Deliver(ctx context.Context, addrs []string, pkgs []proto.Message, onResult func(proto.Result)) (proto.SessionStats, error) {
	conn, _, err := c.Connect(ctx, addrs)
	if err != nil {
		return proto.SessionStats{}, err
	}
	defer conn.Close()
	return c.Send(ctx, conn, pkgs, onResult)
}

// Send runs one QMTP session on conn: it streams every package and calls
// onResult once for every recipient of every package, in order, as the
// replies arrive (onResult is never called concurrently). If a reply is
// missing — the connection ended, a timeout, a protocol violation, a
// message that could not be read — that recipient and every later one get
// a Z with FromServer false, and Send returns the error that ended the
// session. Send does not close conn, and needs it fresh: nothing read from
// it yet, so that the reader's stream offsets are the socket's (see
// proto.MarkArrivals).
//
// When the channel of proto.StopStarting(ctx) closes, the writer starts
// no further package; the replies owed for the packages already started
// are still read (within ReadTimeout), the packages never started get a Z
// saying so, and Send returns an error wrapping proto.ErrInterrupted.
// Cancelling ctx ends everything at once.
//
// A package without recipients is refused before anything is sent: a
// server answers it with nothing, and a client waiting for that nothing
// would wait forever.
func (c *Client) Send(ctx context.Context, conn net.Conn, pkgs []proto.Message, onResult func(proto.Result)) (proto.SessionStats, error) {
	for i := range pkgs {
		if len(pkgs[i].Recipients) == 0 {
			return proto.SessionStats{}, fmt.Errorf("qmtp: package %d has no recipients", i)
		}
	}
	s := &clientSession{
		marks:        make([]atomic.Pointer[proto.ArrivalMark], len(pkgs)),
		ctx:          ctx,
		conn:         conn,
		pkgs:         pkgs,
		onResult:     onResult,
		writeTO:      clientOrDefault(c.WriteTimeout, ClientWriteTimeout),
		readTO:       clientOrDefault(c.ReadTimeout, ClientReadTimeout),
		sent:         make(chan sentPackage, len(pkgs)),
		writerDone:   make(chan error, 1),
		writerExited: make(chan struct{}),
		progress:     make(chan struct{}, 1),
		stopWriting:  make(chan struct{}),
		stopStarting: proto.StopStarting(ctx),
	}
	s.lastWrite.Store(time.Now().UnixNano())

	// Cancelling ctx unblocks both sides by expiring their deadlines.
	stopWatch := context.AfterFunc(ctx, func() {
		conn.SetDeadline(time.Unix(1, 0))
	})
	defer stopWatch()

	go s.write()
	readErr := s.read()
	if readErr != nil {
		// Stop the writer: nothing it sends now can get a reply.
		s.stop()
		conn.SetWriteDeadline(time.Unix(1, 0))
	}
	writeErr := <-s.writerDone
	if readErr != nil && ctx.Err() != nil {
		readErr = fmt.Errorf("qmtp: %w", ctx.Err())
	}
	s.failRest(readErr)

	stats := proto.SessionStats{BytesOut: s.bytesOut.Load(), BytesIn: s.bytesIn, Replies: s.replies}
	if readErr != nil {
		return stats, readErr
	}
	if writeErr == nil && s.interrupted {
		return stats, fmt.Errorf("qmtp: %w", proto.ErrInterrupted)
	}
	return stats, writeErr
}

func clientOrDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// sentPackage tells the reader that the writer has started package index,
// whose final byte is at end (cumulative bytes on the connection). err is
// set when the message could not be opened and the package was skipped.
type sentPackage struct {
	index int
	end   int64
	err   error
}

type clientSession struct {
	ctx      context.Context
	conn     net.Conn
	pkgs     []proto.Message
	onResult func(proto.Result)
	writeTO  time.Duration
	readTO   time.Duration

	sent         chan sentPackage // writer → reader, in package order
	writerDone   chan error
	writerExited chan struct{} // closed when the writer has returned
	progress     chan struct{} // a write completed (one token, never blocks)
	stopOnce     sync.Once
	stopWriting  chan struct{}   // the session failed: stop at once
	stopStarting <-chan struct{} // asked to stop: finish the package under way
	// interrupted is set by the writer when stopStarting left packages
	// unstarted; read after writerExited.
	interrupted bool

	// Written by the writer, read by the reader.
	// marks[i] is the arrival mark taken just before package i's final
	// byte was handed to the kernel; stored before bytesOut covers it.
	marks        []atomic.Pointer[proto.ArrivalMark]
	bytesStarted atomic.Int64 // bytes handed to (or being handed to) the kernel
	bytesOut     atomic.Int64 // bytes the kernel took
	lastWrite    atomic.Int64 // UnixNano of the last completed write
	writeFailed  atomic.Bool  // the writer gave up; writeErr says why
	writeErr     error

	// Reader state.
	bytesIn  int64
	replies  int
	nextPkg  int // first package not fully resolved
	nextRcpt int // first unresolved recipient of nextPkg
	skipped  map[int]error
	// announced: packages the writer started (or skipped), counted by
	// the reader and, after the session, by failRest.
	announced int
}

func (s *clientSession) stop() { s.stopOnce.Do(func() { close(s.stopWriting) }) }

// write streams every package through one buffer. It flushes only when
// the buffer fills and at the end: the packages are all local, so the
// writer never waits for input, and a full buffer keeps a slow link busy.
func (s *clientSession) write() {
	defer close(s.writerExited)
	defer close(s.sent)
	cw := &clientConnWriter{s: s}
	bw := bufio.NewWriterSize(cw, 64<<10)
	nw := netstring.NewWriter(bw)
	var offset int64
	err := func() error {
		for i := range s.pkgs {
			select {
			case <-s.stopWriting:
				return nil
			case <-s.stopStarting:
				// Send the rest of the package under way; its reply
				// is owed and will be read.
				s.interrupted = true
				return bw.Flush()
			default:
			}
			p := &s.pkgs[i]
			body, err := p.Open()
			if err != nil {
				s.sent <- sentPackage{index: i, err: fmt.Errorf("cannot read message: %w", err)}
				continue
			}
			offset += WireSize(p)
			cw.ends = append(cw.ends, packageEnd{end: offset, index: i})
			s.sent <- sentPackage{index: i, end: offset}
			err = writeClientPackage(nw, p, body)
			body.Close()
			if err != nil {
				return err
			}
		}
		return bw.Flush()
	}()
	if err != nil {
		// Wake the reader: replies for packages not completely written
		// will never come.
		s.writeErr = err
		s.writeFailed.Store(true)
		s.conn.SetReadDeadline(time.Unix(1, 0))
	}
	s.writerDone <- err
}

// writeClientPackage writes netstring("\n" message) netstring(sender)
// netstring(netstring(rcpt)...).
func writeClientPackage(nw *netstring.Writer, p *proto.Message, body io.Reader) error {
	if err := nw.WriteHeader(p.Size + 1); err != nil {
		return err
	}
	if _, err := nw.Write([]byte{'\n'}); err != nil {
		return err
	}
	n, err := io.Copy(nw, io.LimitReader(body, p.Size))
	if err != nil {
		return err
	}
	if n != p.Size {
		// The header promised Size bytes; the session cannot go on.
		return fmt.Errorf("qmtp: message ended after %d of %d bytes", n, p.Size)
	}
	if err := nw.WriteTrailer(); err != nil {
		return err
	}
	if err := nw.WriteString(p.Sender); err != nil {
		return err
	}
	if err := nw.WriteHeader(recipientListSize(p)); err != nil {
		return err
	}
	for _, r := range p.Recipients {
		if err := nw.WriteString(r); err != nil {
			return err
		}
	}
	return nw.WriteTrailer()
}

// clientConnWriter counts bytes and applies the write timeout. It ends a
// write at every package's final byte, so bytesOut says exactly when the
// kernel has taken a whole package: the moment its reply may come. The
// final byte itself goes in a write of its own, after the arrival mark
// that judges the package's replies.
type clientConnWriter struct {
	s      *clientSession
	pos    int64        // bytes the kernel took
	ends   []packageEnd // packages not yet fully written
	uncork func()       // set while the bytes before a final byte wait for it
}

// packageEnd is the stream offset just past package index's final byte.
type packageEnd struct {
	end   int64
	index int
}

func (w *clientConnWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		for len(w.ends) > 0 && w.ends[0].end <= w.pos {
			w.ends = w.ends[1:]
		}
		chunk := p
		final := -1 // the package whose final byte chunk is
		if len(w.ends) > 0 {
			if left := w.ends[0].end - w.pos; int64(len(chunk)) >= left {
				if left > 1 {
					chunk = chunk[:left-1] // all but the final byte
					if w.uncork == nil {
						// They leave with it, not before (proto.Cork).
						w.uncork = proto.Cork(w.s.conn)
					}
				} else {
					chunk = chunk[:1]
					final = w.ends[0].index
				}
			}
		}
		n, err := w.write(chunk, final)
		written += n
		w.pos += int64(n)
		p = p[n:]
		if w.uncork != nil && (final >= 0 || err != nil) {
			w.uncork()
			w.uncork = nil
		}
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// write hands p to the kernel. When p is the final byte of package
// final (-1: it is not), the kernel's count of bytes received is taken
// first, as close to the hand-over as can be: every reply byte below it
// was readable before the package was complete. The reader looks at the
// mark only once bytesOut covers the byte, so it is always there by then.
func (w *clientConnWriter) write(p []byte, final int) (int, error) {
	s := w.s
	select {
	case <-s.stopWriting:
		return 0, errors.New("qmtp: session ended")
	default:
	}
	s.bytesStarted.Add(int64(len(p)))
	s.conn.SetWriteDeadline(time.Now().Add(s.writeTO))
	if err := s.ctx.Err(); err != nil { // checked after arming: see Send's watcher
		return 0, err
	}
	if final >= 0 {
		m := proto.MarkArrivals(s.conn)
		s.marks[final].Store(&m)
	}
	n, err := s.conn.Write(p)
	s.bytesStarted.Add(int64(n - len(p)))
	s.bytesOut.Add(int64(n))
	s.lastWrite.Store(time.Now().UnixNano())
	select {
	case s.progress <- struct{}{}:
	default:
	}
	if err != nil && clientIsTimeout(err) {
		err = fmt.Errorf("qmtp: write timed out after %v: %w", s.writeTO, err)
	}
	return n, err
}

// read consumes replies for the packages the writer announces, until all
// are answered or the session fails.
func (s *clientSession) read() error {
	rr := &clientConnReader{s: s}
	br := bufio.NewReaderSize(rr, 4096)
	nr := netstring.NewReader(br)
	for sp := range s.sent {
		s.announced = sp.index + 1
		if sp.err != nil {
			s.noteSkipped(sp.index, sp.err)
			s.resolveLocal(sp.index, sp.err)
			continue
		}
		rr.owedEnd = sp.end
		p := &s.pkgs[sp.index]
		for j := range p.Recipients {
			rr.waitFrom = time.Now()
			at := rr.in - int64(br.Buffered()) // where this reply starts in the stream
			b, err := nr.ReadBytes(proto.MaxReplyText)
			if err != nil {
				return s.replyError(err)
			}
			if !s.fullyWritten(sp.end, rr.startedWhenArrived(at)) || s.arrivedEarly(sp.index, at) {
				return fmt.Errorf("qmtp: %w: a reply arrived before the package was sent in full", proto.ErrRemoteViolation)
			}
			reply, err := proto.ParseReply(b)
			if err != nil {
				return fmt.Errorf("qmtp: %w: %v", proto.ErrRemoteViolation, err)
			}
			s.replies++
			s.nextPkg, s.nextRcpt = sp.index, j+1
			s.onResult(proto.Result{Message: sp.index, Recipient: j, Reply: reply, FromServer: true})
			rr.forget(rr.in - int64(br.Buffered()))
		}
		s.nextPkg, s.nextRcpt = sp.index+1, 0
	}
	// Every package sent is answered. A byte already here is a reply
	// to nothing: the server's stream and ours disagree, so the replies
	// just taken may belong to other packages than it meant.
	if br.Buffered() > 0 {
		return fmt.Errorf("qmtp: %w: more replies than recipients sent", proto.ErrRemoteViolation)
	}
	return nil
}

// fullyWritten says whether a reply may count for the package ending at
// end, given how many bytes had been handed to the kernel when the
// reply's first byte arrived. Handed over but still in a write that has
// not returned: the kernel may have taken the final byte, so wait for
// that write's outcome.
func (s *clientSession) fullyWritten(end, startedOnArrival int64) bool {
	if startedOnArrival < end {
		return false
	}
	for s.bytesOut.Load() < end {
		if s.bytesStarted.Load() < end {
			return false // the write carrying the final byte failed
		}
		select {
		case <-s.progress:
		case <-s.writerExited:
			return s.bytesOut.Load() >= end
		case <-s.ctx.Done():
			return false
		}
	}
	return true
}

// arrivedEarly says whether a reply to package index starting at stream
// offset at had reached the socket before the package's final byte was
// handed to the kernel. Called once fullyWritten said yes, so the mark,
// stored before that byte's write, is there; unknown, it says no, and the
// reader's own view (fullyWritten) decides alone.
func (s *clientSession) arrivedEarly(index int, at int64) bool {
	m := s.marks[index].Load()
	return m != nil && m.Early(at)
}

func (s *clientSession) replyError(err error) error {
	var te *clientReadTimeout
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, proto.ErrRemoteViolation):
		return err
	case errors.Is(err, netstring.ErrUnexpectedEOF):
		return errors.New("qmtp: connection closed before every reply arrived")
	case errors.Is(err, netstring.ErrGrammar):
		return fmt.Errorf("qmtp: %w: %v", proto.ErrRemoteViolation, err)
	default:
		return fmt.Errorf("qmtp: reading reply: %w", err)
	}
}

// resolveLocal gives every recipient of a package that was never sent a Z
// of its own.
func (s *clientSession) resolveLocal(index int, err error) {
	p := &s.pkgs[index]
	for j := range p.Recipients {
		s.onResult(proto.Result{Message: index, Recipient: j, Reply: proto.Z(err.Error())})
	}
	s.nextPkg, s.nextRcpt = index+1, 0
}

// noteSkipped records why the writer skipped package index (it could not
// be read), for the replies of its recipients.
func (s *clientSession) noteSkipped(index int, err error) {
	if s.skipped == nil {
		s.skipped = map[int]error{}
	}
	s.skipped[index] = err
}

// failRest gives every unresolved recipient a Z. Called after both
// goroutines have stopped.
func (s *clientSession) failRest(cause error) {
	// Drain what the writer announced but the reader never reached, to
	// keep the reasons of skipped packages.
	for sp := range s.sent {
		s.announced = sp.index + 1
		if sp.err != nil {
			s.noteSkipped(sp.index, sp.err)
		}
	}
	text := "no reply from the server"
	if cause != nil {
		text = "no reply from the server: " + cause.Error()
	}
	for i := s.nextPkg; i < len(s.pkgs); i++ {
		start := 0
		if i == s.nextPkg {
			start = s.nextRcpt
		}
		t := text
		if err, ok := s.skipped[i]; ok {
			t = err.Error()
		} else if i >= s.announced && s.interrupted {
			t = "not sent: " + proto.ErrInterrupted.Error()
		}
		for j := start; j < len(s.pkgs[i].Recipients); j++ {
			s.onResult(proto.Result{Message: i, Recipient: j, Reply: proto.Z(t)})
		}
	}
}

// clientReadTimeout is a reply not complete within ReadTimeout of the
// moment it was owed.
type clientReadTimeout struct{ d time.Duration }

func (e *clientReadTimeout) Error() string {
	return fmt.Sprintf("qmtp: no reply within %v of being owed (a reply must be complete by then)", e.d)
}

// clientConnReader reads replies against a deadline set when the wait for
// a reply starts (waitFrom): ReadTimeout after the later of that moment
// and the client's last write, counted only once the package's final byte
// has been written (before that the server has nothing to say yet, so the
// reader only wakes every ReadTimeout to look again). Bytes read never
// move the deadline: a server trickling its reply is given up on time.
type clientConnReader struct {
	s        *clientSession
	owedEnd  int64     // final byte of the package whose reply is read
	waitFrom time.Time // when the wait for the current reply started
	armed    time.Time // the read deadline now set on the connection

	in       int64     // bytes read from the connection
	arrivals []arrival // chunks not yet consumed, in stream order
}

// arrival is a chunk read from the connection: it ends at stream offset
// upTo, and when it came the writer had handed started bytes to the kernel.
type arrival struct{ upTo, started int64 }

// startedWhenArrived is the write progress when the byte at stream offset
// at arrived.
func (r *clientConnReader) startedWhenArrived(at int64) int64 {
	for _, a := range r.arrivals {
		if a.upTo > at {
			return a.started
		}
	}
	return r.s.bytesStarted.Load()
}

// forget drops the chunks consumed up to stream offset at.
func (r *clientConnReader) forget(at int64) {
	i := 0
	for i < len(r.arrivals) && r.arrivals[i].upTo <= at {
		i++
	}
	r.arrivals = r.arrivals[i:]
}

// due returns the reply's deadline, and whether the reply is owed yet.
func (r *clientConnReader) due() (time.Time, bool) {
	s := r.s
	if s.bytesOut.Load() < r.owedEnd {
		return time.Now().Add(s.readTO), false
	}
	from := time.Unix(0, s.lastWrite.Load())
	if from.Before(r.waitFrom) {
		from = r.waitFrom
	}
	return from.Add(s.readTO), true
}

func (r *clientConnReader) Read(p []byte) (int, error) {
	s := r.s
	for {
		deadline, owed := r.due()
		if !deadline.Equal(r.armed) {
			s.conn.SetReadDeadline(deadline)
			r.armed = deadline
		}
		// Checked after arming the deadline, so a cancellation racing
		// with it is never lost.
		if err := s.ctx.Err(); err != nil {
			return 0, err
		}
		if s.writeFailed.Load() && s.bytesOut.Load() < r.owedEnd {
			return 0, fmt.Errorf("qmtp: sending failed: %w", s.writeErr)
		}
		if owed && !time.Now().Before(deadline) {
			return 0, &clientReadTimeout{d: s.readTO}
		}
		n, err := s.conn.Read(p)
		if n > 0 {
			s.bytesIn += int64(n)
			r.in += int64(n)
			started := s.bytesStarted.Load()
			if started < r.owedEnd {
				// Not even handed to the kernel yet, so the server
				// cannot have it: whatever it says is no reply.
				return 0, fmt.Errorf("qmtp: %w: the server answered before the package was sent in full", proto.ErrRemoteViolation)
			}
			r.arrivals = append(r.arrivals, arrival{upTo: r.in, started: started})
		}
		if n > 0 || err == nil || !clientIsTimeout(err) {
			return n, err
		}
		// A timeout: ours, or a wake-up (cancellation, a failed
		// writer) that set the deadline in the past. Arm again.
		r.armed = time.Time{}
		if err := s.ctx.Err(); err != nil {
			return 0, err
		}
		if s.writeFailed.Load() && s.bytesOut.Load() < r.owedEnd {
			return 0, fmt.Errorf("qmtp: sending failed: %w", s.writeErr)
		}
	}
}

func clientIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
