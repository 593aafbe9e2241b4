//go:build peers

package testpeer

import (
	"net"
	"os"
	"testing"
)

// procListening finds the port of a listening socket from /proc, as the
// peer starters read it for a peer told to listen on port 0.
func TestProcListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port, ok := procListening(os.Getpid())
	if !ok || port != l.Addr().(*net.TCPAddr).Port {
		t.Fatalf("procListening: %d %v, want %s", port, ok, l.Addr())
	}
}
