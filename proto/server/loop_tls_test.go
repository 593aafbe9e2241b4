package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/testkit/testtls"
)

// tlsListener listens on 127.0.0.1:0 behind TLS with a fresh self-signed
// certificate, and returns a client configuration that trusts it.
func tlsListener(t *testing.T) (net.Listener, *tls.Config) {
	t.Helper()
	cert := testtls.New(t, "mx.test")
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return tls.NewListener(inner, cert.Server()), cert.Client("mx.test")
}

// serveTLS runs a Loop on a TLS listener whose sessions echo one line,
// and stops it when the test ends.
func serveTLS(t *testing.T, lp *Loop, cfg *Config) (string, *tls.Config) {
	t.Helper()
	l, client := tlsListener(t)
	errc := make(chan error, 1)
	go func() { errc <- lp.Serve(l, cfg) }()
	t.Cleanup(func() {
		lp.Close()
		if err := <-errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String(), client
}

// echo is a session that writes back what it reads first.
func echo(_ context.Context, c Conn, _ proto.Peer) Outcome {
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return Outcome{Err: err}
	}
	c.Write(buf[:n])
	return Outcome{}
}

// A TLS listener's connections are served as any: the session reads and
// writes in the clear over TLS.
func TestServeTLSListener(t *testing.T) {
	addr, client := serveTLS(t, &Loop{}, &Config{Protocol: "TEST", Refuse: func(io.Writer) error { return nil }, Session: echo})
	c, err := tls.Dial("tcp", addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	c.Write([]byte("hello\n"))
	got, err := io.ReadAll(c)
	if string(got) != "hello\n" {
		t.Errorf("echoed %q (%v), want %q", got, err, "hello\n")
	}
}

// A client that connects to a TLS listener and never sends its hello
// holds its slot for the idle time at most (Timeout, short here): the
// server closes it, and with the one slot free again the next client is
// served.
func TestServeTLSSilentClientGivesUpSlot(t *testing.T) {
	lp := &Loop{Conns: NewConnLimit(1, 1, time.Minute)}
	addr, client := serveTLS(t, lp, &Config{Protocol: "TEST", Timeout: 2 * time.Second,
		Refuse: func(io.Writer) error { return nil }, Session: echo})
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("the silent client's connection: %v, want it closed by the server", err)
	}
	c, err := tls.Dial("tcp", addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	c.Write([]byte("next\n"))
	if got, _ := io.ReadAll(c); string(got) != "next\n" {
		t.Errorf("the next client got %q", got)
	}
}

// Refusals written in the accept loop (every linger place taken) run the
// handshake of a TLS connection within a bound: silent clients outside
// the access list do not hold up the accept loop, and a later client is
// still answered: its refusal, or, when its handshake takes longer than
// the accept loop's bound, a closed connection; never no answer.
func TestServeTLSRefusalsDoNotBlockAccept(t *testing.T) {
	lp := &Loop{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Conns: NewConnLimit(1, 1, time.Minute)}
	addr, client := serveTLS(t, lp, &Config{Protocol: "TEST", Timeout: time.Minute,
		Refuse:  func(w io.Writer) error { _, err := io.WriteString(w, "not authorized\n"); return err },
		Session: echo})
	for range 3 { // the first lingers in the one place; the others are refused in the accept loop
		silent, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
	}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(time.Minute)) // a guard: without the bound, the accept loop never gets here
	got, err := io.ReadAll(tls.Client(raw, client))
	if isTimeout(err) || (err == nil && string(got) != "not authorized\n") {
		t.Errorf("a refused TLS client got %q, %v", got, err)
	}
}
