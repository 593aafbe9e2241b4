package proto

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// bytesReceived reads the kernel's count of payload bytes received on a
// TCP socket (Linux 4.1 and later; an older kernel leaves it zero, so
// no reply is judged early by the mark and the reader's own check stays).
func bytesReceived(conn net.Conn) (int64, bool) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0, false
	}
	if _, isTCP := conn.(*net.TCPConn); !isTCP {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var serr error
	if err := raw.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || serr != nil {
		return 0, false
	}
	return int64(info.Bytes_received), true
}
