package proto

import (
	"os"
	"strings"
	"time"
)

// AppendReceived appends the trace line a server puts on top of every
// message it takes, and a newline:
//
//	Received: from HOST (IP) by LOCAL with QMQP; 5 Mar 2024 06:07:08 -0000
//
// Peer strings come from the network or from DNS, so every byte outside
// qmail's safe set becomes '?' (as qmail's received.c does) and none can
// end the header line; an unknown host is "unknown". The date is UTC in
// qmail's form: "-0000" says the local offset is unknown to the message.
func AppendReceived(dst []byte, peer Peer, local string, t time.Time) []byte {
	host := peer.RemoteHost
	if host == "" {
		host = "unknown"
	}
	protocol := peer.Protocol
	if protocol == "" {
		protocol = "QMQP"
	}
	dst = append(dst, "Received: from "...)
	dst = appendSafe(dst, host)
	if peer.RemoteIP != "" {
		dst = append(dst, " ("...)
		dst = appendSafe(dst, peer.RemoteIP)
		dst = append(dst, ')')
	}
	dst = append(dst, " by "...)
	dst = appendSafe(dst, local)
	dst = append(dst, " with "...)
	dst = appendSafe(dst, protocol)
	dst = append(dst, "; "...)
	dst = t.UTC().AppendFormat(dst, "2 Jan 2006 15:04:05 -0000")
	return append(dst, '\n')
}

// LocalName is the server's own name for the Received line: the configured
// one, else the name the connection arrived for (tcpserver's
// TCPLOCALHOST), else the host name, else "localhost".
func LocalName(configured string, peer Peer) string {
	if configured != "" {
		return configured
	}
	if peer.LocalHost != "" {
		return peer.LocalHost
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// appendSafe appends s (cut at 255 bytes) with every byte outside
// [A-Za-z0-9.@%+/=:-[]] replaced by '?'.
func appendSafe(dst []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte(".@%+/=:-[]", c) >= 0:
		default:
			c = '?'
		}
		dst = append(dst, c)
	}
	return dst
}
