// Package servetest runs a QMQP, QMTP or SMTP server on a loopback port
// for the servers' tests.
package servetest

import (
	"net"
	"testing"
)

// Server is what Start needs of a server.
type Server interface {
	Serve(net.Listener) error
	Close() error
}

// Start runs srv.Serve on 127.0.0.1:0 and returns the address it listens
// on and a channel with Serve's result; the server is closed when the
// test ends.
func Start(t testing.TB, srv Server) (string, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, srv, l)
}

// Serve is Start on a listener of the test's own (one that adjusts each
// connection it accepts, say): it runs srv.Serve on l and returns l's
// address and a channel with Serve's result; the server is closed when
// the test ends.
func Serve(t testing.TB, srv Server, l net.Listener) (string, <-chan error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), errc
}
