package testpeer

import (
	"net"

	"golang.org/x/sys/unix"
)

// acked reports whether the peer's kernel has acknowledged n bytes sent
// on c (TCP_INFO's tcpi_bytes_acked).
func acked(c *net.TCPConn, n int64) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var got int64
	raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			got = int64(info.Bytes_acked)
		}
	})
	return got >= n
}
