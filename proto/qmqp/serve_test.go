package qmqp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/server"
	"qbox/proto/testkit/servetest"
)

// gateBackend tells when a delivery has begun and lets the test decide
// when its Commit answers: K once release is closed, Z if the session is
// cut first.
type gateBackend struct {
	begun   chan struct{} // one value per Begin
	release chan struct{}
	mu      sync.Mutex
	aborted int
}

func newGateBackend() *gateBackend {
	return &gateBackend{begun: make(chan struct{}, 100), release: make(chan struct{})}
}

type gateDelivery struct{ b *gateBackend }

func (b *gateBackend) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	b.begun <- struct{}{}
	return gateDelivery{b}, nil
}
func (d gateDelivery) Write(p []byte) (int, error) { return len(p), nil }
func (d gateDelivery) Abort() {
	d.b.mu.Lock()
	d.b.aborted++
	d.b.mu.Unlock()
}
func (d gateDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	select {
	case <-d.b.release:
		return proto.Repeat(len(env.Recipients), proto.K("ok"))
	case <-ctx.Done():
		return proto.Repeat(len(env.Recipients), proto.Z("cut"))
	}
}

// syncBuffer is a log for slog that the test may read meanwhile.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startPackage connects and sends a package's beginning, up to part of
// the message, and waits until the backend has begun the delivery: the
// session is running. rest completes the package.
func startPackage(t *testing.T, addr string, b *gateBackend) (c net.Conn, rest []byte) {
	t.Helper()
	pkg := serverPkg("Subject: x\n\nbody\n", "a@example.test", "b@example.test")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(pkg[:12]); err != nil {
		t.Fatal(err)
	}
	<-b.begun
	return c, pkg[12:]
}

func readAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading: %v", err)
	}
	return got
}

// A client outside Allow gets the immediate D and nothing reaches the
// backend; the refusal is logged.
func TestServeRefusesClientOutsideAllow(t *testing.T) {
	b := newGateBackend()
	log := &syncBuffer{}
	srv := &qmqp.Server{Backend: b, Loop: server.Loop{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
		Logger: slog.New(slog.NewTextHandler(log, nil))}
	addr, _ := servetest.Start(t, srv)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(serverPkg("m\n", "a@b", "c@d"))
	if got, want := readAll(t, c), serverWire("D"+server.NotAuthorized); !bytes.Equal(got, want) {
		t.Fatalf("reply %q, want %q", got, want)
	}
	if len(b.begun) != 0 {
		t.Error("a refused client's message reached the backend")
	}
	if l := log.String(); !strings.Contains(l, `msg="client not authorized" proto=QMQP remote=127.0.0.1`) {
		t.Errorf("log:\n%s", l)
	}
}

// One ConnLimit bounds the sessions of two servers together: with the
// QMQP server's one slot taken, a QMTP connection is closed without a
// reply; once the QMQP session is over, QMTP is served again.
func TestServeConnLimitShared(t *testing.T) {
	conns := server.NewConnLimit(1, 0, time.Nanosecond)
	b := newGateBackend()
	close(b.release)
	log := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(log, nil))
	qaddr, _ := servetest.Start(t, &qmqp.Server{Backend: b, Loop: server.Loop{Conns: conns}, Logger: logger})
	taddr, _ := servetest.Start(t, &qmtp.Server{Backend: b, Loop: server.Loop{Conns: conns}, Logger: logger})

	c, rest := startPackage(t, qaddr, b) // holds the one slot
	qmtpPkg := netstring.AppendString(nil, "\nSubject: y\n\nbody\n")
	qmtpPkg = netstring.AppendString(qmtpPkg, "a@example.test")
	qmtpPkg = netstring.Append(qmtpPkg, netstring.AppendString(nil, "b@example.test"))
	tc, err := net.Dial("tcp", taddr)
	if err != nil {
		t.Fatal(err)
	}
	tc.Write(qmtpPkg)
	if got := readAll(t, tc); len(got) != 0 {
		t.Fatalf("QMTP beyond the shared limit got %q, want the connection closed", got)
	}
	tc.Close()
	if !strings.Contains(log.String(), `msg="connection refused: too many connections" proto=QMTP remote=127.0.0.1 max_conns=1`) {
		t.Errorf("log:\n%s", log.String())
	}

	c.Write(rest)
	if got := readAll(t, c); !bytes.Equal(got, serverWire("Kok")) {
		t.Fatalf("QMQP reply %q", got)
	}
	tc, err = net.Dial("tcp", taddr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.Write(qmtpPkg)
	tc.(*net.TCPConn).CloseWrite()
	if got := readAll(t, tc); !bytes.Equal(got, serverWire("Kok")) {
		t.Fatalf("QMTP with the slot free again: %q, want Kok", got)
	}
}

// Shutdown closes the listener (Serve returns ErrServerClosed at once)
// and waits for the session under way, which is answered as usual.
func TestServeShutdownWaitsForSession(t *testing.T) {
	b := newGateBackend()
	close(b.release)
	srv := &qmqp.Server{Backend: b}
	addr, errc := servetest.Start(t, srv)
	c, rest := startPackage(t, addr, b)

	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(context.Background()) }()
	if err := <-errc; !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve: %v, want ErrServerClosed", err)
	}
	if c2, err := net.Dial("tcp", addr); err == nil {
		c2.Close()
		t.Fatal("a new connection was accepted after Shutdown")
	}
	c.Write(rest)
	if got := readAll(t, c); !bytes.Equal(got, serverWire("Kok")) {
		t.Fatalf("reply %q, want Kok", got)
	}
	c.Close() // ends the server's linger
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := srv.Serve(l); !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// When Shutdown's context ends first, the session still running is cut:
// no reply (the client sends again), its delivery aborted, and Shutdown
// returns once it has ended, with the context's error.
func TestServeShutdownCutsAfterContext(t *testing.T) {
	b := newGateBackend()
	srv := &qmqp.Server{Backend: b}
	addr, errc := servetest.Start(t, srv)
	c, _ := startPackage(t, addr, b)

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	if err := <-errc; !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve: %v, want ErrServerClosed", err)
	}
	cancel()
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v, want context.Canceled", err)
	}
	b.mu.Lock()
	aborted := b.aborted
	b.mu.Unlock()
	if aborted != 1 {
		t.Errorf("%d deliveries aborted, want 1 (Shutdown returned before the session ended?)", aborted)
	}
	if got := readAll(t, c); len(got) != 0 {
		t.Fatalf("a cut session replied %q", got)
	}
}

// Close cuts at once.
func TestServeClose(t *testing.T) {
	b := newGateBackend()
	srv := &qmqp.Server{Backend: b}
	addr, errc := servetest.Start(t, srv)
	c, _ := startPackage(t, addr, b)
	srv.Close()
	if err := <-errc; !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve: %v, want ErrServerClosed", err)
	}
	if got := readAll(t, c); len(got) != 0 {
		t.Fatalf("a cut session replied %q", got)
	}
}

// A client that sends more after its package (breaking the protocol)
// still gets its reply whole, then the end of the stream: the server
// sees the input left unread and lingers rather than close on it, which
// would reset the connection.
func TestServeLingersOnInputAfterPackage(t *testing.T) {
	b := newGateBackend()
	srv := &qmqp.Server{Backend: b}
	addr, _ := servetest.Start(t, srv)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	// More than the server reads at once (32 KiB), less than it lets
	// the client send unread: all sent before the reply.
	extra := bytes.Repeat([]byte("x"), 48<<10)
	if _, err := c.Write(append(serverPkg("Subject: x\n\nbody\n", "a@example.test", "b@example.test"), extra...)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	close(b.release) // the reply goes out now
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, serverWire("Kok")) {
		t.Fatalf("read %q, %v; want Kok and the end of stream", got, err)
	}
}
