package mxps

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"qbox/proto"
)

// DialFunc makes a connection; net.Dialer.DialContext is one.
type DialFunc = proto.DialFunc

// Dialer connects to exchangers under MXPS's rule.
type Dialer struct {
	// Dial makes connections; nil means a net.Dialer.
	Dial DialFunc
	// ConnectTimeout bounds each connection attempt; 0 means
	// proto.DefaultConnectTimeout (10s).
	ConnectTimeout time.Duration
	// Ports overrides 209 and 25 (tests, non-standard setups).
	Ports Ports
}

func (d *Dialer) dialer() proto.Dialer {
	return proto.Dialer{Dial: d.Dial, Timeout: d.ConnectTimeout, Protocol: "mxps"}
}

func (a Attempt) name() string { return fmt.Sprintf("%s %s (%s)", a.Protocol, a.Addr, a.Host) }

// ErrSessionStarted wraps a session's error in Deliver's result, to say
// that no further attempt was made because one had connected.
var ErrSessionStarted = errors.New("session started; no fallback")

// Deliver walks attempts in order (AllAttempts gives them) under MXPS's
// rule: an attempt whose connect fails is followed by the next one (for a
// QMTP exchanger, SMTP on the same address); the first attempt that
// connects is handed to session and is the last one, whatever session
// returns. session must close conn. The result is session's error wrapped
// with ErrSessionStarted, nil on success, or a *proto.ConnectError.
func (d *Dialer) Deliver(ctx context.Context, attempts []Attempt, session func(conn net.Conn, a Attempt) error) (Attempt, error) {
	addrs := make([]string, len(attempts))
	for i, a := range attempts {
		addrs[i] = a.Addr
	}
	conn, i, err := d.dialer().DialFirst(ctx, addrs, func(i int) string { return attempts[i].name() })
	if err != nil {
		return Attempt{}, err
	}
	a := attempts[i]
	if err := session(conn, a); err != nil {
		return a, fmt.Errorf("%w: %s %s: %w", ErrSessionStarted, a.Protocol, a.Addr, err)
	}
	return a, nil
}
