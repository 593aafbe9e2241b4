package smtp_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/internal/servetest"
	"qbox/proto/smtp"
)

// okBackend stores nothing and answers K.
type okBackend struct{}

type okDelivery struct{}

func (okBackend) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return okDelivery{}, nil
}
func (okDelivery) Write(p []byte) (int, error) { return len(p), nil }
func (okDelivery) Abort()                      {}
func (okDelivery) Commit(_ context.Context, env proto.Envelope) []proto.Reply {
	return proto.Repeat(len(env.Recipients), proto.K("ok"))
}

// A client outside Allow is greeted 554 and the connection closed.
func TestServeRefusesClientOutsideAllow(t *testing.T) {
	addr, _ := servetest.Start(t, &smtp.Server{Backend: okBackend{}, Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	got, _ := io.ReadAll(c)
	if string(got) != smtp.NotAuthorized {
		t.Fatalf("got %q, want %q", got, smtp.NotAuthorized)
	}
}

// Shutdown ends a session waiting outside a mail transaction at once,
// without cutting it; Serve returns ErrServerClosed.
func TestServeShutdownEndsIdleSession(t *testing.T) {
	srv := &smtp.Server{Backend: okBackend{}, Hostname: "mx.test"}
	addr, errc := servetest.Start(t, srv)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	in := bufio.NewReader(c)
	if line, err := in.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	c.Write([]byte("HELO client.test\r\n"))
	if line, err := in.ReadString('\n'); err != nil || !strings.HasPrefix(line, "250 ") {
		t.Fatalf("HELO reply %q, %v", line, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	if err := <-errc; !errors.Is(err, proto.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	io.Copy(io.Discard, in) // the server ends the session (a 421, then EOF)
	c.Close()               // ends the server's linger
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v, want nil (the idle session drained)", err)
	}
}
