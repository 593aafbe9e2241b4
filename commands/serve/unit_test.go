package serve

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/server"
	"qbox/proto/store/maildir"
	"qbox/proto/testkit/testtls"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1": 1, "10485760": 10 << 20, "10M": 10 << 20, "10m": 10 << 20, "10MiB": 10 << 20, "10MB": 10 << 20,
		"64k": 64 << 10, "2G": 2 << 30, " 3K ": 3 << 10,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1", "M", "10X", "1.5M", "10MM", "99999999999G", "K10"} {
		if got, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, got)
		}
	}
}

func TestParseAllow(t *testing.T) {
	got, err := ParseAllow([]string{"10.0.0.0/8", "192.168.1.7", "2001:db8::/32,::1", "10.1.2.3/16"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32", "::1/128", "10.1.0.0/16"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("prefix %d = %s, want %s", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0"} {
		if _, err := ParseAllow([]string{bad}); err == nil {
			t.Errorf("ParseAllow(%q) succeeded", bad)
		}
	}
}

type fakeListener struct {
	net.Listener
	addr net.Addr
}

func (f fakeListener) Addr() net.Addr { return f.addr }

func TestCheckListeners(t *testing.T) {
	ls := func(addrs ...string) []Listener {
		var out []Listener
		for _, a := range addrs {
			ta, _ := net.ResolveTCPAddr("tcp", a)
			out = append(out, Listener{Protocol: QMQP, Listener: fakeListener{addr: ta}})
		}
		return out
	}
	if err := CheckListeners(Config{}, ls("127.0.0.1:628", "[::1]:209")); err != nil {
		t.Errorf("loopback refused: %v", err)
	}
	for _, a := range []string{"0.0.0.0:628", "[::]:628", "192.0.2.1:628"} {
		err := CheckListeners(Config{}, ls("127.0.0.1:209", a))
		if err == nil || !strings.Contains(err.Error(), "--allow") {
			t.Errorf("%s without --allow: %v", a, err)
		}
		if err := CheckListeners(Config{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, ls(a)); err != nil {
			t.Errorf("%s with --allow: %v", a, err)
		}
	}
}

func TestActivationListeners(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	// Not activated, or activated for another process.
	if ls, err := ActivationListeners(env(nil), nil); ls != nil || err != nil {
		t.Fatalf("no LISTEN_FDS: %v %v", ls, err)
	}
	if ls, err := ActivationListeners(env(map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "1"}), nil); ls != nil || err != nil {
		t.Fatalf("other pid: %v %v", ls, err)
	}
	pid := strconv.Itoa(os.Getpid())
	if _, err := ActivationListeners(env(map[string]string{"LISTEN_FDS": "x", "LISTEN_PID": pid}), nil); err == nil {
		t.Fatal("bad LISTEN_FDS accepted")
	}
	var unset []string
	ActivationListeners(env(map[string]string{"LISTEN_FDS": "0", "LISTEN_PID": pid}), func(k string) error {
		unset = append(unset, k)
		return nil
	})
	if len(unset) != 3 {
		t.Errorf("unset %v, want the three LISTEN_ variables removed", unset)
	}
}

func TestActivationProtocol(t *testing.T) {
	addr := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	for _, c := range []struct {
		name, addr, want string
	}{
		{"qmqp", "127.0.0.1:9999", QMQP}, {"QMTP", "127.0.0.1:9999", QMTP},
		{"", "127.0.0.1:628", QMQP}, {"unknown", "127.0.0.1:209", QMTP},
		{"smtp", "127.0.0.1:9999", SMTP}, {"", "127.0.0.1:25", SMTP}, {"lmtp", "127.0.0.1:24", ""},
	} {
		got, err := activationProtocol(c.name, addr(c.addr))
		if got != c.want || (c.want == "") != (err != nil) {
			t.Errorf("activationProtocol(%q, %s) = %q, %v", c.name, c.addr, got, err)
		}
	}
}

func TestStdioPeer(t *testing.T) {
	env := map[string]string{"TCPREMOTEIP": "192.0.2.5", "TCPREMOTEHOST": "client.example", "TCPLOCALHOST": "mx.example"}
	p := server.StdioPeer(func(k string) string { return env[k] }, nil)
	if p != (proto.Peer{RemoteIP: "192.0.2.5", RemoteHost: "client.example", LocalHost: "mx.example"}) {
		t.Errorf("from tcpserver's environment: %+v", p)
	}
	remote, _ := net.ResolveTCPAddr("tcp", "[::ffff:198.51.100.7]:4000")
	p = server.StdioPeer(func(string) string { return "" }, remote)
	if p.RemoteIP != "198.51.100.7" {
		t.Errorf("from the socket: %+v", p)
	}
}

// More connections than --max-conns: the surplus waits, then is closed,
// and the server keeps running.
func TestMaxConnsInProcess(t *testing.T) {
	dir := t.TempDir()
	st, err := maildir.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(Config{Backend: st, MaxConns: 2, Timeout: 500 * time.Millisecond, QueueWait: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx, []Listener{{Protocol: QMQP, Listener: l}}) }()
	var conns []net.Conn
	for range 10 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	closed := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				closed++
			}
		}
		c.Close()
	}
	if closed != len(conns) {
		t.Fatalf("%d of %d connections closed", closed, len(conns))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The mail listeners' connections carry no TCP keep-alive (idle timeout
// and session limit bound them; keep-alive cost four system calls per
// connection).
func TestListenNoKeepAlive(t *testing.T) {
	ls, err := Listen("127.0.0.1:0", "127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	tlsLs, err := ListenTLS("127.0.0.1:0", "", testtls.New(t).Server())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range append(ls, tlsLs...) {
		defer l.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if tc, ok := a.(*tls.Conn); ok {
			a = tc.NetConn()
		}
		rc, err := a.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var on int
		var serr error
		rc.Control(func(fd uintptr) { on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) })
		if serr != nil || on != 0 {
			t.Errorf("%s listener %s: SO_KEEPALIVE %d, %v; want 0", l.Protocol, l.Addr(), on, serr)
		}
	}
}
