package testpeer

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// EarlyKMessage is a message size beyond every socket buffer between a
// client and EarlyKServer (loopback's send buffer grows to 4 MiB, the
// server's receive buffer is kept small): the client cannot hand the
// final byte of such a package to its kernel before the server reads.
const EarlyKMessage = 16 << 20

// EarlyKServer is the server of issue 20: the moment a client connects it
// writes early (for example "6:Kearly,"), before reading any byte, and
// only once early has reached the client's socket (the client's kernel
// acknowledged it: an event, not a delay) does it read what the client
// sends, to its end, and close without a reply. With a package of
// EarlyKMessage bytes, early is certain to be on the client's side before
// the client's final byte is handed over: any client that takes it as an
// answer is wrong, whatever its scheduling. It returns the address and a
// count of sessions.
func EarlyKServer(t testing.TB, early []byte) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var sessions atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			sessions.Add(1)
			go func() {
				defer c.Close()
				tc := c.(*net.TCPConn)
				tc.SetReadBuffer(64 << 10)
				if _, err := c.Write(early); err != nil {
					return
				}
				guard := time.Now().Add(time.Minute)
				for !acked(tc, int64(len(early))) && time.Now().Before(guard) {
					time.Sleep(100 * time.Microsecond) // the count moves when the ACK comes; nothing signals it
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String(), &sessions
}
