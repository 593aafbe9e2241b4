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
// accepted by the server, with an empty receive queue, and c's side with
// an empty send queue (nothing still on its way). It is the event "the
// session is running", which a signal test needs before it stops the
// server: a connection still in the accept queue would be reset when the
// listener closes. The kernel offers no event for a queue another process
// drains, so this polls the table, bounded by a guard of 30s.
func waitServerRead(t testing.TB, c net.Conn) {
	t.Helper()
	server, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	client, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, unread, found := socketQueues(t, server, client)
		unsent, _, sent := socketQueues(t, client, server)
		if found && sent && unread == 0 && unsent == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server has not read what was sent on %v after 30s (found %v, %d bytes unsent, %d unread)", c.LocalAddr(), found, unsent, unread)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// socketQueues returns the send and receive queues of the established
// IPv4 socket local→remote, from /proc/net/tcp.
func socketQueues(t testing.TB, local, remote netip.AddrPort) (tx, rx int64, found bool) {
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
		txs, rxs, _ := strings.Cut(f[4], ":")
		tx, err1 := strconv.ParseInt(txs, 16, 64)
		rx, err2 := strconv.ParseInt(rxs, 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("/proc/net/tcp: %q", line)
		}
		return tx, rx, true
	}
	return 0, 0, false
}
