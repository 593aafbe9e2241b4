package qmtp_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmtp"
	"qbox/proto/server"
	"qbox/proto/testkit/servetest"
)

// cutBackend's Commit tells when it has started and answers only when
// the session is cut: Z, as a store whose commit was cut short does.
type cutBackend struct{ committing chan struct{} }

type cutDelivery struct{ b *cutBackend }

func (b *cutBackend) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return cutDelivery{b}, nil
}
func (d cutDelivery) Write(p []byte) (int, error) { return len(p), nil }
func (d cutDelivery) Abort()                      {}
func (d cutDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	d.b.committing <- struct{}{}
	<-ctx.Done()
	return proto.Repeat(len(env.Recipients), proto.Z("cut short"))
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// A client outside Allow gets the immediate D.
func TestServeRefusesClientOutsideAllow(t *testing.T) {
	b := &serverBackend{}
	addr, _ := servetest.Start(t, &qmtp.Server{Backend: b, Loop: server.Loop{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}})
	c := dial(t, addr)
	c.Write(serverPkg(lf("m\n"), "a@b", "c@d"))
	equalReplies(t, serverReadReplies(t, c), []string{"D" + server.NotAuthorized})
	if begun, _, _ := b.counts(); begun != 0 {
		t.Error("a refused client's message reached the backend")
	}
}

// A session waiting between packages ends at once on Shutdown, cleanly:
// Shutdown returns nil without having to cut it (its context would say
// so), and the client sees the connection close after its reply.
func TestServeShutdownDrainsBetweenPackages(t *testing.T) {
	b := &serverBackend{}
	srv := &qmtp.Server{Backend: b}
	addr, errc := servetest.Start(t, srv)
	c := dial(t, addr)
	c.Write(serverPkg(lf("m\n"), "a@b", "c@d"))
	r, err := netstring.NewReader(c).ReadBytes(proto.MaxReplyText)
	if err != nil || r[0] != 'K' {
		t.Fatalf("reply %q, %v", r, err)
	}
	// The session now waits for a next package that never comes (its
	// idle timeout is a minute away).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	// The server ends the session (before the client's 30s deadline):
	// only the drain can, and it lingers until the client closes.
	equalReplies(t, serverReadReplies(t, c), nil)
	c.Close()
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v, want nil (the idle session drained)", err)
	}
	if err := <-errc; !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	b.check(t)
}

// A session cut by Shutdown's context still gets every reply it is owed:
// here the Z of a commit cut short, for each recipient of the package it
// sent completely.
func TestServeShutdownCutStillReplies(t *testing.T) {
	b := &cutBackend{committing: make(chan struct{}, 1)}
	srv := &qmtp.Server{Backend: b}
	addr, errc := servetest.Start(t, srv)
	c := dial(t, addr)
	c.Write(serverPkg(lf("m\n"), "a@b", "c@d", "e@f"))
	<-b.committing

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	if err := <-errc; !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	cancel()
	equalReplies(t, serverReadReplies(t, c), []string{"Zcut short", "Zcut short"})
	c.Close() // ends the server's linger
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v, want context.Canceled", err)
	}
}
