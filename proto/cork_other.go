//go:build !linux

package proto

import "net"

func setCork(*net.TCPConn, bool) bool { return false }
