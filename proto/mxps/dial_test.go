package mxps

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/testkit/counting"
)

// reserve binds one port on every one of ips (the kernel chooses it on
// the first) without listening: connecting there is refused, and nothing
// else can take the port, until listen turns a socket into a listener.
// It returns the port and the sockets, one per ip.
func reserve(t *testing.T, ips ...string) (int, []int) {
	t.Helper()
	bind := func(ip string, port int) (int, error) {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		sa := &syscall.SockaddrInet4{Port: port}
		copy(sa.Addr[:], net.ParseIP(ip).To4())
		if err := syscall.Bind(fd, sa); err != nil {
			syscall.Close(fd)
			return -1, err
		}
		t.Cleanup(func() { syscall.Close(fd) })
		return fd, nil
	}
	// The port the kernel gave on the first address may be taken on
	// another: then take another port (the sockets already bound stay
	// bound until the test ends, so the loop ends).
	for range 100 {
		first, err := bind(ips[0], 0)
		if err != nil {
			t.Fatal(err)
		}
		sa, err := syscall.Getsockname(first)
		if err != nil {
			t.Fatal(err)
		}
		port := sa.(*syscall.SockaddrInet4).Port
		fds := []int{first}
		for _, ip := range ips[1:] {
			fd, err := bind(ip, port)
			if err != nil {
				break
			}
			fds = append(fds, fd)
		}
		if len(fds) == len(ips) {
			return port, fds
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0, nil
}

// listen makes a socket of reserve listen, accepts its connections and
// counts them.
func listen(t *testing.T, fd int) *atomic.Int32 {
	t.Helper()
	if err := syscall.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	// A copy of the descriptor: reserve closes its own at the end.
	dup, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(dup), "listener")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return &n
}

// No attempt connects: one proto.ConnectError naming every attempt by
// protocol, address and exchanger, unwrapping to each refusal.
func TestDeliverNoneConnects(t *testing.T) {
	port, _ := reserve(t, "127.0.0.1")
	ports := Ports{QMTP: strconv.Itoa(port), SMTP: strconv.Itoa(port)}
	d := &Dialer{ConnectTimeout: 2 * time.Second, Ports: ports}
	rep := Report{Exchangers: []Exchanger{{Pref: 12801, Host: "q1", Class: QMTP, Addrs: addrs("127.0.0.1")}}}
	attempts := AllAttempts(rep, ports)
	_, err := d.Deliver(context.Background(), attempts, func(c net.Conn, a Attempt) error {
		t.Fatalf("session on %v: nothing listens", a)
		return nil
	})
	var ce *proto.ConnectError
	if !errors.As(err, &ce) || len(ce.Tried) != len(attempts) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("all closed: %v", err)
	}
	if want := "QMTP 127.0.0.1:" + strconv.Itoa(port) + " (q1)"; ce.Tried[0].Addr != "127.0.0.1:"+strconv.Itoa(port) || !strings.Contains(err.Error(), want) {
		t.Fatalf("all closed: %v; want the first attempt named %q", err, want)
	}
}

func TestDeliverRule(t *testing.T) {
	qport, qfds := reserve(t, "127.0.0.1", "127.0.0.2")
	sport, sfds := reserve(t, "127.0.0.1", "127.0.0.2")
	ports := Ports{QMTP: strconv.Itoa(qport), SMTP: strconv.Itoa(sport)}
	d := &Dialer{ConnectTimeout: 2 * time.Second, Ports: ports}
	rep := Report{Exchangers: []Exchanger{
		{Pref: 12801, Host: "q1", Class: QMTP, Addrs: addrs("127.0.0.1")},
		{Pref: 12817, Host: "q2", Class: QMTP, Addrs: addrs("127.0.0.2")},
	}}
	attempts := AllAttempts(rep, ports)
	if len(attempts) != 4 {
		t.Fatalf("attempts %v", attempts)
	}

	// QMTP closed on the first address: SMTP on the same address.
	smtp1 := listen(t, sfds[0])
	var sessions []Attempt
	a, err := d.Deliver(context.Background(), attempts, func(c net.Conn, a Attempt) error {
		c.Close()
		sessions = append(sessions, a)
		return nil
	})
	if err != nil || a.Protocol != ProtoSMTP || a.Host != "q1" || len(sessions) != 1 {
		t.Fatalf("QMTP closed: got %v %v, sessions %v", a, err, sessions)
	}
	counting.WaitExactly(t, smtp1, 1, "connections")

	// QMTP open on the first address and its session fails: no SMTP on
	// that address, no attempt on the next exchanger.
	qmtp1 := listen(t, qfds[0])
	qmtp2 := listen(t, qfds[1])
	sessions = nil
	a, err = d.Deliver(context.Background(), attempts, func(c net.Conn, a Attempt) error {
		c.Close()
		sessions = append(sessions, a)
		return errors.New("reply lost")
	})
	if !errors.Is(err, ErrSessionStarted) || a.Protocol != ProtoQMTP || a.Host != "q1" || len(sessions) != 1 {
		t.Fatalf("QMTP session failed: got %v %v, sessions %v", a, err, sessions)
	}
	counting.WaitExactly(t, qmtp1, 1, "connections")
	// No fallback: a marker connection of our own to the SMTP and second
	// QMTP listeners is queued behind any Deliver made before it returned,
	// so once the marker is counted the count is final.
	for _, addr := range []string{"127.0.0.1:" + strconv.Itoa(sport), "127.0.0.2:" + strconv.Itoa(qport)} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	counting.WaitExactly(t, smtp1, 2, "connections") // the first run's session and the marker
	counting.WaitExactly(t, qmtp2, 1, "connections") // the marker only
}
