package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"qbox/proto"
)

// The access list (moved here from commands/serve with the check itself).
func TestAllowed(t *testing.T) {
	for ip, want := range map[string]bool{"127.0.0.1": true, "127.3.4.5": true, "::1": true, "::ffff:127.0.0.1": true,
		"10.0.0.1": false, "2001:db8::1": false} {
		if got := Allowed(nil, netip.MustParseAddr(ip)); got != want {
			t.Errorf("default list: Allowed(%s) = %v", ip, got)
		}
	}
	if Allowed(nil, netip.Addr{}) {
		t.Error("an unknown address is allowed")
	}
	list := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	for ip, want := range map[string]bool{"127.0.0.1": true, "127.0.0.2": false, "::1": false, "10.9.9.9": true, "::ffff:10.0.0.1": true} {
		if got := Allowed(list, netip.MustParseAddr(ip)); got != want {
			t.Errorf("--allow list: Allowed(%s) = %v", ip, got)
		}
	}
}

// flakyListener fails its first Accepts, as a server out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, errors.New("accept: too many open files")
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// A failing Accept is logged and retried, never the end of Serve; the
// connection that comes after is served; Close ends Serve with
// ErrServerClosed.
func TestServeRetriesFailedAccept(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &flakyListener{Listener: inner, fails: 3}
	var log bytes.Buffer
	var logMu sync.Mutex
	served := make(chan string, 1)
	cfg := &Config{
		Protocol: "TEST",
		Logger:   slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return log.Write(p) }), nil)),
		Refuse:   func(io.Writer) error { return nil },
		Session: func(_ context.Context, c Conn, peer proto.Peer) Outcome {
			served <- peer.RemoteIP
			return Outcome{}
		},
	}
	var lp Loop
	errc := make(chan error, 1)
	go func() { errc <- lp.Serve(l, cfg) }()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ip := <-served; ip != "127.0.0.1" {
		t.Errorf("session for %q", ip)
	}
	lp.Close()
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(log.String(), `msg="accept failed" proto=TEST err="accept: too many open files"`); n != 3 {
		t.Errorf("%d accept failures logged, want 3:\n%s", n, log.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// countingListener counts the connections Serve holds open (accepted and
// not yet closed) and the most it ever held: the descriptors a server
// spends on clients.
type countingListener struct {
	net.Listener
	open, peak atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	n := l.open.Add(1)
	for p := l.peak.Load(); n > p && !l.peak.CompareAndSwap(p, n); p = l.peak.Load() {
	}
	return &countedConn{TCPConn: c.(*net.TCPConn), l: l}, nil
}

type countedConn struct {
	*net.TCPConn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.TCPConn.Close()
}

// syncLog is a logger's output that tests read while the server writes.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *syncLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// burstServer serves on a counting listener with conns; each session
// reports its client's address on started and then holds its slot until
// its context is cut (an idle client) or hold yields.
func burstServer(t *testing.T, conns *ConnLimit, allow []netip.Prefix, hold <-chan struct{}) (*countingListener, *Loop, chan string, *syncLog) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &countingListener{Listener: inner}
	started := make(chan string, 2000)
	log := &syncLog{}
	cfg := &Config{
		Protocol: "TEST",
		Logger:   slog.New(slog.NewTextHandler(log, nil)),
		Refuse:   func(w io.Writer) error { _, err := io.WriteString(w, "not authorized\n"); return err },
		Busy:     func(w io.Writer) error { _, err := io.WriteString(w, "busy\n"); return err },
		Session: func(ctx context.Context, c Conn, peer proto.Peer) Outcome {
			started <- c.(net.Conn).RemoteAddr().String()
			select {
			case <-ctx.Done():
			case <-hold:
			}
			return Outcome{}
		},
	}
	lp := &Loop{Allow: allow, Conns: conns}
	errc := make(chan error, 1)
	go func() { errc <- lp.Serve(l, cfg) }()
	t.Cleanup(func() {
		cut, cancel := context.WithCancel(context.Background())
		cancel()
		lp.Shutdown(cut) // cuts the sessions and waits for every goroutine
		if err := <-errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return l, lp, started, log
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads what the server says until it closes, within a generous
// guard (a minute), and fails if it does not close.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("no close from the server: %v (read %q)", err, b)
	}
	return string(b)
}

// Connections beyond the slots wait in the waiting room and get their
// sessions in the order they arrived; one that finds every slot and
// place taken is refused at once (Busy), not after a wait (it is an hour
// here).
func TestBurstWaitsInOrder(t *testing.T) {
	hold := make(chan struct{})
	l, _, started, log := burstServer(t, NewConnLimit(1, 3, time.Hour), nil, hold)
	addr := l.Addr().String()
	first := dial(t, addr)
	if got := <-started; got != first.LocalAddr().String() {
		t.Fatalf("session for %s, want %s", got, first.LocalAddr())
	}
	var waiting []net.Conn
	for range 3 {
		waiting = append(waiting, dial(t, addr))
	}
	late := dial(t, addr)
	if got := readAll(t, late); got != "busy\n" {
		t.Fatalf("a connection beyond slot and waiting room got %q, want busy and a close", got)
	}
	for _, c := range waiting {
		hold <- struct{}{} // the running session ends: the next in line starts
		if got := <-started; got != c.LocalAddr().String() {
			t.Fatalf("session for %s, want %s (the next in the order they came)", got, c.LocalAddr())
		}
	}
	if n := strings.Count(log.String(), `msg="connection refused: too many connections" proto=TEST remote=127.0.0.1 max_conns=1 waiting=3 why="waiting room full"`); n != 1 {
		t.Errorf("%d refusals logged, want 1:\n%s", n, log.String())
	}
}

// A connection that waits longer than QueueWait is refused (Busy) and
// logged; the session holding the slot goes on.
func TestBusyAfterWait(t *testing.T) {
	l, _, started, log := burstServer(t, NewConnLimit(1, 1, time.Millisecond), nil, nil)
	dial(t, l.Addr().String())
	<-started
	if got := readAll(t, dial(t, l.Addr().String())); got != "busy\n" {
		t.Fatalf("a connection waiting too long got %q, want busy and a close", got)
	}
	if !strings.Contains(log.String(), `max_conns=1 waiting=1 why="waited too long"`) {
		t.Errorf("log:\n%s", log.String())
	}
}

// 1,000 idle connections against 20 slots and a waiting room of 100: the
// server holds 120 of them (its bound, plus the one being refused in the
// accept loop), refuses the other 880 at once, and so does it a good
// client that comes next: a prompt temporary failure while idle
// connections hold every slot and place, not a wait.
func TestIdleFloodHeldWithinBound(t *testing.T) {
	const max, waiting, clients = 20, 100, 1000
	l, _, started, _ := burstServer(t, NewConnLimit(max, waiting, time.Hour), nil, nil)
	addr := l.Addr().String()
	conns := make([]net.Conn, clients)
	for i := range conns {
		conns[i] = dial(t, addr)
	}
	for range max {
		<-started
	}
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for _, c := range conns[max+waiting:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(time.Minute))
			if b, err := io.ReadAll(c); err != nil || string(b) != "busy\n" {
				errs <- fmt.Sprintf("%s: %q %v", c.LocalAddr(), b, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("a connection beyond the bound was not refused at once: %s", e)
	}
	begin := time.Now()
	if got := readAll(t, dial(t, addr)); got != "busy\n" {
		t.Fatalf("the good client got %q, want busy and a close", got)
	}
	t.Logf("good client refused after %v with every slot and place held", time.Since(begin))
	if p := l.peak.Load(); p > max+waiting+1 {
		t.Fatalf("%d connections held at once, bound %d", p, max+waiting+1)
	}
	if n := l.open.Load(); n != max+waiting {
		t.Fatalf("%d connections held, want %d", n, max+waiting)
	}
}

// Clients outside the access list each get the refusal; at most Max of
// them linger (the refusal kept from a reset), the others are closed at
// once: a flood of them holds no more than that.
func TestRefusalsHeldWithinBound(t *testing.T) {
	const max = 2
	allow := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	l, _, _, log := burstServer(t, NewConnLimit(max, 0, time.Hour), allow, nil)
	for range 50 {
		if got := readAll(t, dial(t, l.Addr().String())); got != "not authorized\n" {
			t.Fatalf("refused client got %q", got)
		}
	}
	if p := l.peak.Load(); p > max+1 {
		t.Fatalf("%d refused connections held at once, bound %d", p, max+1)
	}
	if n := strings.Count(log.String(), `msg="client not authorized" proto=TEST remote=127.0.0.1`); n != 50 {
		t.Errorf("%d refusals logged, want 50", n)
	}
}
