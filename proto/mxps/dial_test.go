package mxps

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
)

// listen accepts connections on ip:port and counts them.
func listen(t *testing.T, ip string, port int) *atomic.Int32 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
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

// freePort returns a port free on both 127.0.0.1 and 127.0.0.2.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(port))
		l1.Close()
		if err == nil {
			l2.Close()
			return port
		}
	}
	t.Fatal("no port free on 127.0.0.1 and 127.0.0.2")
	return 0
}

// No attempt connects: one proto.ConnectError naming every attempt by
// protocol, address and exchanger, unwrapping to each refusal.
func TestDeliverNoneConnects(t *testing.T) {
	port := freePort(t)
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

func waitCount(t *testing.T, n *atomic.Int32, want int32) {
	t.Helper()
	for i := 0; i < 200 && n.Load() < want; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if got := n.Load(); got != want {
		t.Fatalf("%d connections, want %d", got, want)
	}
}

func TestDeliverRule(t *testing.T) {
	qport, sport := freePort(t), freePort(t)
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
	smtp1 := listen(t, "127.0.0.1", sport)
	var sessions []Attempt
	a, err := d.Deliver(context.Background(), attempts, func(c net.Conn, a Attempt) error {
		c.Close()
		sessions = append(sessions, a)
		return nil
	})
	if err != nil || a.Protocol != ProtoSMTP || a.Host != "q1" || len(sessions) != 1 {
		t.Fatalf("QMTP closed: got %v %v, sessions %v", a, err, sessions)
	}
	waitCount(t, smtp1, 1)

	// QMTP open on the first address and its session fails: no SMTP on
	// that address, no attempt on the next exchanger.
	qmtp1 := listen(t, "127.0.0.1", qport)
	qmtp2 := listen(t, "127.0.0.2", qport)
	sessions = nil
	a, err = d.Deliver(context.Background(), attempts, func(c net.Conn, a Attempt) error {
		c.Close()
		sessions = append(sessions, a)
		return errors.New("reply lost")
	})
	if !errors.Is(err, ErrSessionStarted) || a.Protocol != ProtoQMTP || a.Host != "q1" || len(sessions) != 1 {
		t.Fatalf("QMTP session failed: got %v %v, sessions %v", a, err, sessions)
	}
	waitCount(t, qmtp1, 1)
	time.Sleep(50 * time.Millisecond)
	if smtp1.Load() != 1 || qmtp2.Load() != 0 {
		t.Fatalf("fell back after a QMTP session had started: smtp %d, second QMTP %d", smtp1.Load(), qmtp2.Load())
	}
}
