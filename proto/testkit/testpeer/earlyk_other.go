//go:build !linux

package testpeer

import "net"

// acked cannot ask the kernel here; the server reads on at once (a
// package of EarlyKMessage bytes still holds the client back, and
// loopback delivers the few early bytes first).
func acked(*net.TCPConn, int64) bool { return true }
