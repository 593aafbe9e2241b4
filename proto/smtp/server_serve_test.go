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
	"qbox/proto/server"
	"qbox/proto/smtp"
	"qbox/proto/testkit/servetest"
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
	addr, _ := servetest.Start(t, &smtp.Server{Backend: okBackend{}, Loop: server.Loop{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}})
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
	if err := <-errc; !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	io.Copy(io.Discard, in) // the server ends the session (a 421, then EOF)
	c.Close()               // ends the server's linger
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v, want nil (the idle session drained)", err)
	}
}

// A connection no slot is free for is greeted 421 4.3.2 before the
// close, the client's cue to come again (the close alone looks like a
// broken connection): once at arrival when the waiting room is full,
// once when its wait is over.
func TestServeBusyGreets421(t *testing.T) {
	for _, tc := range []struct {
		name    string
		waiting int
		wait    time.Duration
	}{{"waiting room full", -1, time.Hour}, {"wait over", 1, time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := servetest.Start(t, &smtp.Server{Backend: okBackend{}, Hostname: "mx.test",
				Loop: server.Loop{Conns: server.NewConnLimit(1, tc.waiting, tc.wait)}})
			idle, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			idle.SetDeadline(time.Now().Add(time.Minute))
			if line, err := bufio.NewReader(idle).ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 ") {
				t.Fatalf("greeting %q, %v", line, err) // it holds the one slot
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			got, err := io.ReadAll(c)
			if err != nil || string(got) != smtp.Busy || !strings.HasPrefix(smtp.Busy, "421 4.3.2 ") {
				t.Fatalf("got %q, %v, want %q and a close", got, err, smtp.Busy)
			}
		})
	}
}
