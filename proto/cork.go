package proto

// A client that hands the final byte of a package to the kernel in a
// write of its own (see MarkArrivals) must not make it a segment of its
// own: some servers read a lone last byte badly (Postfix's qmqp-sink
// counts the byte that refills its buffer and then only what follows it,
// so a final read of exactly one byte leaves it waiting for more, and the
// client for a reply). Corking the socket around the split keeps the
// bytes before the final one in the kernel until it is there, so they
// leave together as they did before the split.

import (
	"crypto/tls"
	"net"
)

// Cork holds conn's partial segments in the kernel until the returned
// function is called (Linux TCP_CORK; full segments still go at once).
// Call it before writing the bytes before a package's final byte and
// release after writing that byte. On a connection that cannot cork (not
// a TCP socket, TLS, another system) it does nothing.
func Cork(conn net.Conn) (release func()) {
	for {
		switch c := conn.(type) {
		case *tls.Conn:
			return func() {}
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
			continue
		}
		break
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok || !setCork(tc, true) {
		return func() {}
	}
	return func() { setCork(tc, false) }
}
