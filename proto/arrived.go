package proto

// A client that reads replies while it writes must judge each reply by
// when its bytes reached the socket, not by when its reader got round to
// them: a small package goes to the kernel in one write before the reader
// looks, so a reply the server sent before it had the package looks, to a
// reader, like an answer. The kernel's own count of bytes received on the
// connection, read just before the final byte of a package is handed over,
// draws the line exactly: every byte of the stream below that count was
// readable before the package was complete, so no reply may start there.

import (
	"crypto/tls"
	"net"
)

// ArrivalMark is the stream offset below which every byte from the peer
// had reached the socket when it was taken: a reply that starts below the
// mark of a package's final byte is early. Known is false when the
// connection cannot say (not a TCP socket, or a kernel without the
// count); the caller then falls back on what its reader has seen.
type ArrivalMark struct {
	Offset int64
	Known  bool
}

// Early reports whether a reply whose first byte is at stream offset at
// arrived before the mark was taken.
func (m ArrivalMark) Early(at int64) bool { return m.Known && at < m.Offset }

// MarkArrivals returns how many bytes conn's socket has received from the
// peer so far (TCP_INFO's tcpi_bytes_received on Linux). Call it just
// before the write that carries the final byte of what a reply answers,
// and keep that write to that byte alone, so no reply can slip in between
// the mark and the hand-over unseen.
//
// Over TLS the count is of the socket's bytes, not the plaintext's; it is
// known only for a connection that has not started TLS.
func MarkArrivals(conn net.Conn) ArrivalMark {
	for {
		switch c := conn.(type) {
		case *tls.Conn:
			return ArrivalMark{}
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
			continue
		}
		break
	}
	n, ok := bytesReceived(conn)
	return ArrivalMark{Offset: n, Known: ok}
}
