package qmtp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmtp"
	"qbox/proto/server"
)

// serverBackend is the test's stand-in for the store: it records what
// reaches it and checks the Delivery contract (Commit or Abort exactly
// once, no Write after either). Optionally slow, to exercise pipelining.
// The server commits a session's packages in parallel, so Commits may run
// in any order: deliveries are numbered as they begin (package order),
// the K text carries that number ("ok N": the Nth Begin) and committed is
// kept in that order.
type serverBackend struct {
	mu        sync.Mutex
	begun     int
	aborted   int
	inCommit  int // Commits running now
	maxCommit int // the most that ran at once
	committed []serverMessage
	misuse    []string
	delay     time.Duration // each Commit takes this long
	// reply, if set, answers Commit; default K "ok N" per recipient.
	reply func(env proto.Envelope) []proto.Reply
}

type serverMessage struct {
	seq  int
	Peer proto.Peer
	Size int64
	Body []byte
	Env  proto.Envelope
}

type serverDelivery struct {
	b    *serverBackend
	seq  int // the Begin this delivery came from, from 1
	peer proto.Peer
	size int64
	body bytes.Buffer
	done bool
}

func (b *serverBackend) Begin(ctx context.Context, peer proto.Peer, size int64) (proto.Delivery, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.begun++
	return &serverDelivery{b: b, seq: b.begun, peer: peer, size: size}, nil
}

func (d *serverDelivery) Write(p []byte) (int, error) {
	d.b.mu.Lock()
	if d.done {
		d.b.misuse = append(d.b.misuse, "Write after Commit/Abort")
	}
	d.b.mu.Unlock()
	return d.body.Write(p)
}

func (d *serverDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	d.b.mu.Lock()
	d.b.inCommit++
	d.b.maxCommit = max(d.b.maxCommit, d.b.inCommit)
	d.b.mu.Unlock()
	time.Sleep(d.b.delay)
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.b.inCommit--
	if d.done {
		d.b.misuse = append(d.b.misuse, "Commit after Commit/Abort")
	}
	d.done = true
	if len(env.Recipients) == 0 {
		d.b.misuse = append(d.b.misuse, "Commit without recipients")
	}
	d.b.committed = append(d.b.committed, serverMessage{d.seq, d.peer, d.size, bytes.Clone(d.body.Bytes()), env})
	slices.SortFunc(d.b.committed, func(a, b serverMessage) int { return a.seq - b.seq })
	if d.b.reply != nil {
		return d.b.reply(env)
	}
	out := make([]proto.Reply, len(env.Recipients))
	for i := range out {
		out[i] = proto.K(fmt.Sprintf("ok %d", d.seq))
	}
	return out
}

func (d *serverDelivery) Abort() {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if d.done {
		d.b.misuse = append(d.b.misuse, "Abort after Commit/Abort")
	}
	d.done = true
	d.b.aborted++
}

func (b *serverBackend) counts() (begun, aborted, committed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.begun, b.aborted, len(b.committed)
}

func (b *serverBackend) check(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.misuse) > 0 {
		t.Errorf("delivery misuse: %v", b.misuse)
	}
	if b.aborted+len(b.committed) != b.begun {
		t.Errorf("Begin %d, Abort %d, Commit %d", b.begun, b.aborted, len(b.committed))
	}
}

type serverOutcome struct {
	res qmtp.Result
	err error
}

// serverStart runs srv on 127.0.0.1 and returns its address and a channel
// with every session's outcome.
func serverStart(t *testing.T, srv *qmtp.Server) (string, <-chan serverOutcome) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan serverOutcome, 100)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				res, err := srv.ServeConn(ctx, c, proto.Peer{RemoteIP: ip, LocalHost: "test.example"})
				out <- serverOutcome{res, err}
			}()
		}
	}()
	return l.Addr().String(), out
}

func serverWaitOutcome(t *testing.T, ch <-chan serverOutcome) serverOutcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(20 * time.Second):
		t.Fatal("server session did not end")
		return serverOutcome{}
	}
}

// lf and cr encode a message (LF line ends) in QMTP's two encodings.
func lf(msg string) string { return "\n" + msg }
func cr(msg string) string { return "\r" + strings.ReplaceAll(msg, "\n", "\r\n") }

// serverPkg encodes a QMTP package; msg already carries its mode byte.
func serverPkg(msg, sender string, rcpts ...string) []byte {
	var b []byte
	b = netstring.AppendString(b, msg)
	b = netstring.AppendString(b, sender)
	var list []byte
	for _, r := range rcpts {
		list = netstring.AppendString(list, r)
	}
	return netstring.Append(b, list)
}

// serverConverse sends everything at once (pipelined, without reading),
// half-closes, and returns the replies the server sent before closing.
func serverConverse(t *testing.T, addr string, send []byte) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		c.Write(send)
		c.(*net.TCPConn).CloseWrite()
	}()
	return serverReadReplies(t, c)
}

// serverReadReplies reads reply netstrings until the server closes.
func serverReadReplies(t *testing.T, r io.Reader) []string {
	t.Helper()
	nr := netstring.NewReader(r)
	var got []string
	for {
		b, err := nr.ReadBytes(proto.MaxReplyText)
		if errors.Is(err, netstring.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return got
		}
		if err != nil {
			t.Fatalf("after %d replies %q: %v", len(got), got, err)
		}
		if _, err := proto.ParseReply(b); err != nil {
			t.Fatalf("reply %q: %v", b, err)
		}
		got = append(got, string(b))
	}
}

func newServerForTest(b *serverBackend) *qmtp.Server {
	return &qmtp.Server{Backend: b, Timeout: 5 * time.Second}
}

func equalReplies(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("replies\n got %q\nwant %q", got, want)
	}
}

// The scripted conversation: pipelined packages in both line-end modes,
// duplicate recipients, per-recipient refusals, every reply in order.
func TestServerPipelinedConversation(t *testing.T) {
	b := &serverBackend{delay: 20 * time.Millisecond}
	srv := newServerForTest(b)
	srv.Limits = server.Limits{MaxMessageSize: 100, MaxRecipients: 3}
	addr, out := serverStart(t, srv)

	msg1 := "Subject: one\n\nLF mode keeps\r CRs\r\n as they are\n"
	msg2 := "Subject: two\n\nCR mode\nturns CR LF into LF\rkeeps lone CRs\r"
	var send []byte
	send = append(send, serverPkg(lf(msg1), "a@example.test", "x@example.test")...)
	send = append(send, serverPkg(cr(msg2), "", "y@example.test", "y@example.test", "z\x00@example.test", "w@example.test")...)
	send = append(send, serverPkg(lf(strings.Repeat("x", 101)), "a@b", "c@d", "e@f")...)
	send = append(send, serverPkg(lf("m\n"), "a\x00b", "c@d", "e@f")...)
	send = append(send, serverPkg(lf("m\n"), strings.Repeat("s", 1001), "c@d")...)
	send = append(send, serverPkg(lf("m\n"), "a@b", strings.Repeat("r", 1001), "ok@example.test")...)
	got := serverConverse(t, addr, send)

	tooBig := qmtp.ReplyTooBig.String()
	badSender := qmtp.ReplyBadSender.String()
	badRcpt := qmtp.ReplyBadRecipient.String()
	equalReplies(t, got, []string{
		"Kok 1",
		"Kok 2", "Kok 2", badRcpt, qmtp.ReplyTooMany.String(),
		tooBig, tooBig,
		badSender, badSender,
		badSender,
		badRcpt, "Kok 5", // Begins 3 and 4 were the bad senders', aborted
	})
	o := serverWaitOutcome(t, out)
	if o.err != nil || o.res.Packages != 6 || o.res.Accepted != 4 || o.res.Deferred != 1 || o.res.Rejected != 7 {
		t.Fatalf("outcome %+v, %v", o.res, o.err)
	}
	b.check(t)
	if len(b.committed) != 3 {
		t.Fatalf("%d messages committed, want 3", len(b.committed))
	}
	m := b.committed[0]
	if string(m.Body) != msg1 || m.Env.Sender != "a@example.test" || strings.Join(m.Env.Recipients, ",") != "x@example.test" {
		t.Errorf("message 1: %q %+v", m.Body, m.Env)
	}
	if m.Peer.Protocol != "QMTP" || m.Peer.RemoteIP != "127.0.0.1" || m.Peer.Time.IsZero() {
		t.Errorf("peer %+v", m.Peer)
	}
	m = b.committed[1]
	if string(m.Body) != msg2 || m.Env.Sender != "" || strings.Join(m.Env.Recipients, ",") != "y@example.test,y@example.test" {
		t.Errorf("message 2: %q %+v", m.Body, m.Env)
	}
	if int(m.Size) < len(msg2) {
		t.Errorf("Begin size %d is below the message's %d bytes", m.Size, len(msg2))
	}
	if begun, _, _ := b.counts(); begun != 5 {
		t.Errorf("Begin called %d times; an LF message declared too big must not begin", begun)
	}
}

// The case qmail-qmtpd gets wrong: a protocol error after two good
// packages, all sent at once. The two packages' replies still arrive
// before the connection closes.
func TestServerFlushesOwedRepliesOnProtocolError(t *testing.T) {
	for _, bad := range []struct{ name, send string }{
		{"bad mode byte", "3:Xm\n,0:,5:3:a@b,,"},
		{"empty message", "0:,0:,5:3:a@b,,"},
		{"zero recipients", "3:\nm\n,0:,0:,"},
		{"recipient overruns list", "3:\nm\n,0:,5:4:a@b,,"},
		// Refused by the netstring reader (ErrOverrun) before the body
		// is read, the check the server once repeated.
		{"recipient's comma beyond list", "3:\nm\n,0:,5:3:abc,,"},
		{"missing comma", "3:\nm\n;"},
		{"non-digit length", "x"},
		{"absurd length", "99999999999999999999:"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			b := &serverBackend{}
			addr, out := serverStart(t, newServerForTest(b))
			var send []byte
			send = append(send, serverPkg(lf("one\n"), "a@b", "c@d")...)
			send = append(send, serverPkg(cr("two\n"), "a@b", "c@d", "c@d")...)
			send = append(send, bad.send...)
			send = append(send, serverPkg(lf("never read\n"), "a@b", "c@d")...)
			got := serverConverse(t, addr, send)
			equalReplies(t, got, []string{"Kok 1", "Kok 2", "Kok 2"})
			o := serverWaitOutcome(t, out)
			if !errors.Is(o.err, qmtp.ErrProtocol) || o.res.Packages != 2 {
				t.Fatalf("outcome %+v, %v; want ErrProtocol after 2 packages", o.res, o.err)
			}
			b.check(t)
			if _, _, committed := b.counts(); committed != 2 {
				t.Fatalf("%d committed", committed)
			}
		})
	}
}

// Replies go out while the client waits with the connection open; it
// need not close or send more to get them.
func TestServerRepliesWithoutClientClosing(t *testing.T) {
	b := &serverBackend{}
	addr, out := serverStart(t, newServerForTest(b))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	nr := netstring.NewReader(c)
	for i := 1; i <= 3; i++ {
		p := serverPkg(lf(fmt.Sprintf("message %d\n", i)), "a@b", "c@d", "e@f")
		// The reply must not come before the package's final byte.
		c.Write(p[:len(p)-1])
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		var one [1]byte
		if n, _ := c.Read(one[:]); n != 0 {
			t.Fatalf("reply byte %q before the final comma", one[:n])
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Write(p[len(p)-1:])
		for j := 0; j < 2; j++ {
			r, err := nr.ReadBytes(proto.MaxReplyText)
			if err != nil || string(r) != fmt.Sprintf("Kok %d", i) {
				t.Fatalf("package %d reply %d: %q %v", i, j, r, err)
			}
		}
	}
	c.(*net.TCPConn).CloseWrite()
	if o := serverWaitOutcome(t, out); o.err != nil || o.res.Packages != 3 || o.res.Accepted != 6 {
		t.Fatalf("outcome %+v %v", o.res, o.err)
	}
}

// A client that goes quiet is cut off after the idle timeout; replies
// already owed were sent, the half-sent package is aborted.
func TestServerIdleTimeout(t *testing.T) {
	b := &serverBackend{}
	srv := newServerForTest(b)
	srv.Timeout = 300 * time.Millisecond
	addr, out := serverStart(t, srv)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	send := serverPkg(lf("one\n"), "a@b", "c@d")
	send = append(send, "100:\nhalf a message"...)
	c.Write(send)
	got := serverReadReplies(t, c)
	c.Close()
	equalReplies(t, got, []string{"Kok 1"})
	o := serverWaitOutcome(t, out)
	if !errors.Is(o.err, server.ErrIdleTimeout) || o.res.Packages != 1 {
		t.Fatalf("outcome %+v %v", o.res, o.err)
	}
	b.check(t)
	if begun, aborted, committed := b.counts(); begun != 2 || aborted != 1 || committed != 1 {
		t.Fatalf("Begin %d Abort %d Commit %d", begun, aborted, committed)
	}
}

// A session outlasting its limit ends, even while bytes keep trickling in,
// after the replies it owes.
func TestServerSessionLimit(t *testing.T) {
	b := &serverBackend{}
	srv := newServerForTest(b)
	srv.SessionLimit = 500 * time.Millisecond
	addr, out := serverStart(t, srv)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(append(serverPkg(lf("one\n"), "a@b", "c@d"), "1000:\n"...))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < 100; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	got := serverReadReplies(t, c)
	c.Close()
	equalReplies(t, got, []string{"Kok 1"})
	if o := serverWaitOutcome(t, out); !errors.Is(o.err, server.ErrSessionLimit) {
		t.Fatalf("outcome %+v %v", o.res, o.err)
	}
	b.check(t)
}

// serverMemConn is a client stream held in memory.
type serverMemConn struct {
	r   io.Reader
	out bytes.Buffer
}

func (c *serverMemConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *serverMemConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *serverMemConn) SetReadDeadline(time.Time) error  { return nil }
func (c *serverMemConn) SetWriteDeadline(time.Time) error { return nil }

// CR mode converts exactly CR LF pairs, wherever the reads split the
// stream: here every read returns one byte, so every CR ends a chunk.
func TestServerCRModeAtEveryBoundary(t *testing.T) {
	bodies := []string{
		"a\r\nb\r\n",
		"\r\n",
		"lone trailing CR\r",
		"\r\r\n\r\r\r\n\n\r",
		"no line end",
		"",
		strings.Repeat("x\r\n", 40000) + "\r", // longer than the read buffers
		strings.Repeat("y", 32767) + "\r\n" + strings.Repeat("z", 32766) + "\r\r\n",
	}
	for _, chunked := range []bool{true, false} {
		var send []byte
		for _, body := range bodies {
			send = append(send, serverPkg("\r"+body, "a@b", "c@d")...)
		}
		b := &serverBackend{}
		srv := newServerForTest(b)
		srv.Limits.MaxMessageSize = 1 << 20
		var r io.Reader = bytes.NewReader(send)
		if chunked {
			r = iotest.OneByteReader(r)
		}
		conn := &serverMemConn{r: r}
		res, err := srv.ServeConn(context.Background(), conn, proto.Peer{})
		if err != nil || res.Packages != len(bodies) || res.Accepted != len(bodies) {
			t.Fatalf("chunked=%v: %+v %v", chunked, res, err)
		}
		b.check(t)
		for i, body := range bodies {
			want := strings.ReplaceAll(body, "\r\n", "\n")
			if got := string(b.committed[i].Body); got != want {
				t.Errorf("chunked=%v body %d: got %.60q, want %.60q", chunked, i, got, want)
			}
			if b.committed[i].Size != int64(len(body)) {
				t.Errorf("chunked=%v body %d: Begin size %d, want declared %d", chunked, i, b.committed[i].Size, len(body))
			}
		}
	}
}

// The size limit: LF mode judged from the declared length, CR mode after
// conversion; either way the package is read to its end and each
// recipient gets D, and the session goes on.
func TestServerSizeLimit(t *testing.T) {
	b := &serverBackend{}
	srv := newServerForTest(b)
	srv.Limits.MaxMessageSize = 10
	var send []byte
	send = append(send, serverPkg(lf("0123456789"), "a@b", "c@d")...)         // exactly 10: K
	send = append(send, serverPkg(lf("0123456789A"), "a@b", "c@d", "e@f")...) // 11: D D
	send = append(send, serverPkg(cr("012345678\n"), "a@b", "c@d")...)        // 11 on the wire, 10 stored: K
	send = append(send, serverPkg(cr("0123456789\n"), "a@b", "c@d")...)       // 11 stored: D
	send = append(send, serverPkg(lf("ok\n"), "a@b", "c@d")...)
	conn := &serverMemConn{r: bytes.NewReader(send)}
	res, err := srv.ServeConn(context.Background(), conn, proto.Peer{})
	if err != nil {
		t.Fatal(err)
	}
	got := serverReadReplies(t, &conn.out)
	tooBig := qmtp.ReplyTooBig.String()
	equalReplies(t, got, []string{"Kok 1", tooBig, tooBig, "Kok 2", tooBig, "Kok 4"}) // Begin 3 grew too big
	b.check(t)
	if res.Packages != 5 {
		t.Errorf("result %+v", res)
	}
	if begun, aborted, _ := b.counts(); begun != 4 || aborted != 1 {
		t.Errorf("Begin %d Abort %d: the LF message declared too big must not begin", begun, aborted)
	}
}

// Recipients the backend refuses or defers get their own replies, in
// order; a package whose recipients all fail never reaches the backend.
func TestServerPerRecipientReplies(t *testing.T) {
	b := &serverBackend{reply: func(env proto.Envelope) []proto.Reply {
		out := make([]proto.Reply, len(env.Recipients))
		for i, r := range env.Recipients {
			switch {
			case strings.HasPrefix(r, "d"):
				out[i] = proto.D("no mailbox here by that name (#5.1.1)")
			case strings.HasPrefix(r, "z"):
				out[i] = proto.Z("mailbox full (#4.2.2)")
			default:
				out[i] = proto.K("ok")
			}
		}
		return out
	}}
	var send []byte
	send = append(send, serverPkg(lf("m\n"), "a@b", "k@x", "d@x", "z@x", "k@x", "d@x")...)
	send = append(send, serverPkg(lf("m\n"), "a@b", "bad\x00", "bad\x00")...)
	send = append(send, serverPkg(lf("m\n"), "a@b", "root@x\nX: y", "k@x", "a\rb@c", "")...)
	send = append(send, serverPkg(lf("m\n"), "root@x\nX: y", "k@x", "k@y")...)
	conn := &serverMemConn{r: bytes.NewReader(send)}
	res, err := newServerForTest(b).ServeConn(context.Background(), conn, proto.Peer{})
	if err != nil {
		t.Fatal(err)
	}
	equalReplies(t, serverReadReplies(t, &conn.out), []string{
		"Kok", "Dno mailbox here by that name (#5.1.1)", "Zmailbox full (#4.2.2)", "Kok", "Dno mailbox here by that name (#5.1.1)",
		qmtp.ReplyBadRecipient.String(), qmtp.ReplyBadRecipient.String(),
		// CR, LF and the empty recipient: D for each, the good one goes on.
		qmtp.ReplyBadRecipient.String(), "Kok", qmtp.ReplyBadRecipient.String(), qmtp.ReplyBadRecipient.String(),
		// A sender with LF: D for every recipient.
		qmtp.ReplyBadSender.String(), qmtp.ReplyBadSender.String(),
	})
	if res.Accepted != 3 || res.Deferred != 1 || res.Rejected != 9 {
		t.Errorf("result %+v", res)
	}
	b.check(t)
	if begun, aborted, committed := b.counts(); begun != 4 || aborted != 2 || committed != 2 {
		t.Errorf("Begin %d Abort %d Commit %d", begun, aborted, committed)
	}
	if got := b.committed[1].Env.Recipients; len(got) != 1 || got[0] != "k@x" {
		t.Errorf("committed recipients %q, want only k@x", got)
	}
}

// Cancelling the context ends a session waiting for the next package,
// after its owed replies: the cancel comes once the client has read the
// reply to its one package, when the server can only be waiting for the
// next.
func TestServerShutdown(t *testing.T) {
	b := &serverBackend{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SetDeadline(time.Now().Add(20 * time.Second)) // a guard
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		res qmtp.Result
		err error
	}
	out := make(chan outcome, 1)
	go func() {
		res, err := newServerForTest(b).ServeConn(ctx, c, proto.Peer{})
		c.Close()
		out <- outcome{res, err}
	}()
	if _, err := client.Write(serverPkg(lf("m\n"), "a@b", "c@d")); err != nil {
		t.Fatal(err)
	}
	first, err := netstring.NewReader(client).ReadBytes(proto.MaxReplyText)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	// The server half-closes and lingers until the client closes.
	rest := serverReadReplies(t, client)
	client.Close()
	o := <-out // the server's idle timeout (5s) guards this: a cancel unseen ends in ErrIdleTimeout
	if !errors.Is(o.err, server.ErrShutdown) || o.res.Packages != 1 {
		t.Fatalf("%+v %v", o.res, o.err)
	}
	equalReplies(t, append([]string{string(first)}, rest...), []string{"Kok 1"})
}

// Envelopes bounds what all sessions hold: recipients beyond it get Z
// (#4.5.3) and come again in a later package; each package gives back
// what it took.
func TestServerEnvelopeBudget(t *testing.T) {
	b := &serverBackend{}
	srv := newServerForTest(b)
	budget := server.NewBudget(2 * server.AddressCost(len("k1@x")))
	srv.Envelopes = budget
	var send []byte
	send = append(send, serverPkg(lf("m\n"), "a@b", "k1@x", "k2@x", "k3@x", "k4@x")...)
	send = append(send, serverPkg(lf("m\n"), "a@b", "k3@x", "k4@x")...)
	conn := &serverMemConn{r: bytes.NewReader(send)}
	if _, err := srv.ServeConn(context.Background(), conn, proto.Peer{}); err != nil {
		t.Fatal(err)
	}
	equalReplies(t, serverReadReplies(t, &conn.out), []string{
		"Kok 1", "Kok 1", qmtp.ReplyTooMany.String(), qmtp.ReplyTooMany.String(),
		"Kok 2", "Kok 2",
	})
	b.check(t)
	if !budget.Take(2 * server.AddressCost(len("k1@x"))) {
		t.Fatal("the session did not give back the whole budget")
	}
}
