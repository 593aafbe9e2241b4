// Package server is the kit the QMQP, QMTP and SMTP servers are built on:
// the accept loop and its lifecycle (Loop: Serve, Shutdown, Close,
// HandleConn), the access check, the connection limit and its waiting
// room (ConnLimit), the envelope memory shared by all sessions (Budget),
// a server's size limits and time bounds (Limits, TimedConn), lingering
// before a close (Linger), goroutines used again for sessions and commits
// (Go), a session on stdin and stdout (StdioConn,
// StdioPeer), the CR LF to LF conversion of stored messages, and what the
// two netstring servers share (their common replies, reading an address
// item, pooled buffers).
//
// The wire vocabulary that clients use as well (Reply, Envelope, Backend,
// Peer, Dialer, the address checks) stays in package proto; this package
// is only for the serving side.
package server
