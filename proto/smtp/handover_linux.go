package smtp

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"qbox/proto"
)

// tcpOf is the TCP connection under conn (through NetConn wrappers), or
// nil: not TCP, or TLS, whose socket bytes are not the stream's.
func tcpOf(conn net.Conn) *net.TCPConn {
	for {
		switch c := conn.(type) {
		case *tls.Conn:
			return nil
		case *net.TCPConn:
			return c
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
		default:
			return nil
		}
	}
}

// handOver hands b to the kernel and returns, for each write that
// carried part of it, the end (in b) of what that write carried and the
// arrival mark taken just before it: every byte from the server below
// that mark had reached the socket before the write. The mark and its
// write are back to back, and a write never blocks: when the send buffer
// is full it is retried, with a fresh mark, once the socket is writable,
// so no wait falls between a mark and its write. A write of at most
// handOverMax bytes copies into the socket under its lock, without
// processing what arrives meanwhile, so its mark stands for every byte
// of it. Without TCP (a pipe in a test) it writes b as it is and the
// mark is unknown.
func handOver(conn net.Conn, b []byte) (writes []handed, n int, err error) {
	tc := tcpOf(conn)
	var raw syscall.RawConn
	if tc != nil {
		raw, err = tc.SyscallConn()
	}
	if tc == nil || err != nil {
		n, err = conn.Write(b)
		return []handed{{end: n}}, n, err
	}
	werr := raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			mark := proto.ArrivalMark{}
			if info, e := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); e == nil {
				mark = proto.ArrivalMark{Offset: int64(info.Bytes_received), Known: true}
			}
			m, e := unix.Write(int(fd), b[n:])
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
				return false // wait until writable, then mark again
			case e != nil:
				err = &net.OpError{Op: "write", Net: "tcp", Addr: conn.RemoteAddr(), Err: e}
				return true
			}
			n += m
			writes = append(writes, handed{end: n, mark: mark})
		}
		return true
	})
	if err == nil && werr != nil {
		err = werr
	}
	return writes, n, err
}

// pollRead reads what the socket holds now without waiting: errWouldBlock
// when it holds nothing, or when conn is no TCP socket.
func pollRead(conn net.Conn, p []byte) (int, error) {
	tc := tcpOf(conn)
	if tc == nil {
		return 0, errWouldBlock
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, errWouldBlock
	}
	var n int
	var rerr error
	if err := raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), p)
			if rerr != unix.EINTR {
				return true
			}
		}
	}); err != nil {
		return 0, err
	}
	switch {
	case errors.Is(rerr, syscall.EAGAIN):
		return 0, errWouldBlock
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Addr: conn.RemoteAddr(), Err: rerr}
	case n <= 0:
		return 0, io.EOF
	}
	return n, nil
}
