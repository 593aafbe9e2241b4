package server

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// A client on an IP socket that resets the connection before the server
// reads its address is never taken for a local pipe (an empty RemoteIP,
// served without an access check): its RemoteIP is its address when the
// kernel still has it, else UnknownPeer, which no access list admits.
func TestStdioPeerOfResetClientIsNotLocal(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client.(*net.TCPConn).SetLinger(0) // close sends a reset
	client.Close()
	server.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(server); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the reset: %v, want ECONNRESET", err)
	}
	f, err := server.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := NewStdioConn(f, f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := StdioPeer(func(string) string { return "" }, c.RemoteAddr())
	if p.RemoteIP != "127.0.0.1" && p.RemoteIP != UnknownPeer {
		t.Fatalf("RemoteIP %q, want 127.0.0.1 or %q", p.RemoteIP, UnknownPeer)
	}
}

// A unix socket pair (a local program's pipe) is local: no RemoteIP.
func TestStdioPeerOfUnixSocketIsLocal(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	defer a.Close()
	defer b.Close()
	c, err := NewStdioConn(a, a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := StdioPeer(func(string) string { return "" }, c.RemoteAddr()); p.RemoteIP != "" {
		t.Fatalf("RemoteIP %q, want none", p.RemoteIP)
	}
}
