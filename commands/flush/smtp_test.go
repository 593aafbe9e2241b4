package flush

import (
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

const testHelo = "qbox-test-client.example"

func portOf(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

// countingListener accepts connections, counts them and closes them at
// once: a server that must never be used, or a QMTP session that fails
// right after connecting.
func countingListener(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort().String(), &n
}
