package server

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, srv *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	// A generous guard: every read below waits for an event.
	c.SetDeadline(time.Now().Add(time.Minute))
	s.SetDeadline(time.Now().Add(time.Minute))
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// look tells a peer that can send nothing more (end of stream, a reset)
// from one that still can (nothing unread yet, or input unread), without
// waiting, and never reads beside a TLS connection.
func TestLook(t *testing.T) {
	t.Run("open, nothing unread", func(t *testing.T) {
		_, s := tcpPair(t)
		if st, n := look(s); st != peerQuiet || n != 0 || inputLeft(s) {
			t.Fatalf("look = %v, %d; want quiet", st, n)
		}
	})
	t.Run("input unread", func(t *testing.T) {
		c, s := tcpPair(t)
		c.Write([]byte("abcd")) // one segment on loopback
		if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if st, n := look(s); st != peerSending || n != 3 {
			t.Fatalf("look = %v, %d; want sending, 3", st, n)
		}
		c.Write([]byte("e"))
		if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("fg"))
		if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if !inputLeft(s) {
			t.Fatal("inputLeft = false with input unread")
		}
	})
	t.Run("end of stream", func(t *testing.T) {
		c, s := tcpPair(t)
		c.Write([]byte("abc"))
		c.CloseWrite()
		if got, err := io.ReadAll(s); err != nil || string(got) != "abc" {
			t.Fatalf("read %q, %v", got, err)
		}
		if st, _ := look(s); st != peerClosed || inputLeft(s) {
			t.Fatalf("look = %v after the end of stream, want closed", st)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c, s := tcpPair(t)
		c.SetLinger(0)
		c.Close() // a reset
		if _, err := io.ReadAll(s); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after the reset: %v, want ECONNRESET", err)
		}
		if st, _ := look(s); st != peerClosed {
			t.Fatalf("look = %v after a reset, want closed", st)
		}
	})
	t.Run("TLS", func(t *testing.T) {
		c, s := tcpPair(t)
		c.CloseWrite()
		if _, err := io.ReadAll(s); err != nil {
			t.Fatal(err)
		}
		// Its bytes are the TLS connection's: never read beside it.
		tc := tls.Server(s, &tls.Config{})
		if st, n := look(tc); st != peerUnknown || n != 0 || !inputLeft(tc) {
			t.Fatalf("look(TLS) = %v, %d; want unknown", st, n)
		}
	})
}

// Linger keeps a reply from being destroyed by a reset: the client sent
// what the server never read when the server replies, lingers and
// closes; the client still reads the whole reply, then the end of the
// stream.
func TestLingerKeepsReplyFromReset(t *testing.T) {
	for _, size := range []int{100, 16 << 10} { // within what peerDone reads at once, and beyond
		c, s := tcpPair(t)
		if _, err := c.Write(bytes.Repeat([]byte("x"), size)); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		if _, err := io.ReadFull(s, make([]byte, 1)); err != nil { // it has arrived
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("reply")); err != nil {
			t.Fatal(err)
		}
		Linger(s)
		s.Close()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "reply" {
			t.Fatalf("%d bytes unread: client read %q, %v; want the reply and the end of stream", size, got, err)
		}
	}
}

// A client that read its reply and closed ends the linger at once; one
// that stays open gets the end of the stream (the half-close) and ends it
// by closing.
func TestLingerEndsWithPeer(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		c, s := tcpPair(t)
		c.Close()
		Linger(s) // returns: the guard is tcpPair's deadline
	})
	t.Run("open", func(t *testing.T) {
		c, s := tcpPair(t)
		done := make(chan struct{})
		go func() { Linger(s); close(done) }()
		if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
			t.Fatalf("client read %q, %v; want the end of stream", got, err)
		}
		c.Close()
		<-done
	})
}
