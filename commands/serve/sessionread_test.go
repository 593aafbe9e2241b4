package serve_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitServerRead waits until the server's side of c has read everything
// c sent: the kernel's socket table (/proc/net/tcp) shows that side
// accepted by the server, with an empty receive queue. It is the event
// "the session is running", which a signal test needs before it stops
// the server: a connection still in the accept queue would be reset when
// the listener closes.
func waitServerRead(t *testing.T, c net.Conn) {
	t.Helper()
	local, err := netip.ParseAddrPort(c.RemoteAddr().String()) // the server's side
	if err != nil {
		t.Fatal(err)
	}
	remote, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		queued, found := receiveQueue(t, local, remote)
		if found && queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server has not read what was sent on %v after 30s (found %v, %d bytes queued)", c.LocalAddr(), found, queued)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// receiveQueue returns the receive queue of the established IPv4 socket
// local→remote, from /proc/net/tcp.
func receiveQueue(t *testing.T, local, remote netip.AddrPort) (int64, bool) {
	t.Helper()
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	hex := func(ap netip.AddrPort) string {
		a := ap.Addr().As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	}
	l, r := hex(local), hex(remote)
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st tx_queue:rx_queue ...; 01 is ESTABLISHED.
		if len(f) < 5 || f[1] != l || f[2] != r || f[3] != "01" {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/tcp: %q", line)
		}
		return n, true
	}
	return 0, false
}
