package serverloop

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
		Session: func(_ context.Context, c proto.Conn, peer proto.Peer, _ time.Time) bool {
			served <- peer.RemoteIP
			return false
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
	if err := <-errc; !errors.Is(err, proto.ErrServerClosed) {
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
