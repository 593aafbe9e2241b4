package proto

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// The mark counts what reached the socket, read or not: bytes the peer
// sent are below it before the reader takes them, and reading changes
// nothing.
func TestMarkArrivals(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	defer srv.Close()

	if m := MarkArrivals(conn); !m.Known || m.Offset != 0 {
		t.Fatalf("fresh connection: mark %+v, want known 0", m)
	}
	if _, err := srv.Write([]byte("6:Kearly,")); err != nil {
		t.Fatal(err)
	}
	// Wait for the bytes to reach the socket (an event: the count moves),
	// bounded by a guard.
	waitMark(t, conn, 9)
	if m := MarkArrivals(conn); !m.Early(0) || !m.Early(8) || m.Early(9) {
		t.Fatalf("mark %+v: offsets 0 and 8 should be early, 9 not", m)
	}
	buf := make([]byte, 9)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	if m := MarkArrivals(conn); m.Offset != 9 {
		t.Fatalf("after reading: mark %+v, want 9", m)
	}
}

func waitMark(t *testing.T, conn net.Conn, want int64) {
	t.Helper()
	guard := time.Now().Add(time.Minute)
	for MarkArrivals(conn).Offset < want {
		if time.Now().After(guard) {
			t.Fatalf("the socket never counted %d bytes", want)
		}
		time.Sleep(time.Millisecond)
	}
}

// Over TLS or a pipe the count is not the stream's: unknown, never a
// wrong number.
func TestMarkArrivalsUnknown(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if m := MarkArrivals(a); m.Known || m.Early(0) {
		t.Fatalf("pipe: mark %+v, want unknown", m)
	}
	if m := MarkArrivals(tls.Client(a, &tls.Config{})); m.Known {
		t.Fatalf("TLS: mark %+v, want unknown", m)
	}
}
