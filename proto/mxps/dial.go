package mxps

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// DialFunc makes a connection; net.Dialer.DialContext is one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dialer connects to exchangers under MXPS's rule.
type Dialer struct {
	// Dial makes connections; nil means a net.Dialer.
	Dial DialFunc
	// ConnectTimeout bounds each connection attempt; 0 means 10s.
	ConnectTimeout time.Duration
	// Ports overrides 209 and 25 (tests, non-standard setups).
	Ports Ports
}

// AttemptError is one failed connection attempt.
type AttemptError struct {
	Attempt Attempt
	Err     error
}

// ConnectError means no attempt connected: nothing was sent, so the mail
// can be retried anywhere, later.
type ConnectError struct {
	Tried []AttemptError
}

func (e *ConnectError) Error() string {
	if len(e.Tried) == 0 {
		return "mxps: no exchanger address to try"
	}
	parts := make([]string, len(e.Tried))
	for i, t := range e.Tried {
		parts[i] = fmt.Sprintf("%s %s (%s): %v", t.Attempt.Protocol, t.Attempt.Addr, t.Attempt.Host, t.Err)
	}
	return "mxps: no exchanger reachable: " + strings.Join(parts, "; ")
}

func (d *Dialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	timeout := d.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return dial(dctx, "tcp", addr)
}

// DialQMTP connects to the first target that accepts a connection on the
// QMTP port, for a client that speaks QMTP only: a connect failure moves
// to the next target; nothing else does. It returns the connection and
// the target it reached, or a *ConnectError.
//
// The caller owns the rule's other half: once this returns a connection,
// a QMTP session has started there, and whatever happens in it (an error,
// a lost reply) the mail it carried must not be offered to another target
// now: that could deliver it twice. It stays queued for the next run.
func (d *Dialer) DialQMTP(ctx context.Context, targets []Target) (net.Conn, Target, error) {
	cerr := &ConnectError{}
	for _, t := range targets {
		a := Attempt{Protocol: ProtoQMTP, Addr: joinHostPort(t.Addr.String(), d.Ports.qmtp()), Host: t.Host, Pref: t.Pref}
		conn, err := d.dial(ctx, a.Addr)
		if err == nil {
			return conn, t, nil
		}
		cerr.Tried = append(cerr.Tried, AttemptError{Attempt: a, Err: err})
		if ctx.Err() != nil {
			break
		}
	}
	return nil, Target{}, cerr
}

// ErrSessionStarted wraps a session's error in Deliver's result, to say
// that no further attempt was made because one had connected.
var ErrSessionStarted = errors.New("session started; no fallback")

// Deliver walks attempts in order (AllAttempts gives them) under MXPS's
// rule: an attempt whose connect fails is followed by the next one (for a
// QMTP exchanger, SMTP on the same address); the first attempt that
// connects is handed to session and is the last one, whatever session
// returns. session must close conn. The result is session's error wrapped
// with ErrSessionStarted, nil on success, or a *ConnectError.
func (d *Dialer) Deliver(ctx context.Context, attempts []Attempt, session func(conn net.Conn, a Attempt) error) (Attempt, error) {
	cerr := &ConnectError{}
	for _, a := range attempts {
		conn, err := d.dial(ctx, a.Addr)
		if err != nil {
			cerr.Tried = append(cerr.Tried, AttemptError{Attempt: a, Err: err})
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if err := session(conn, a); err != nil {
			return a, fmt.Errorf("%w: %s %s: %w", ErrSessionStarted, a.Protocol, a.Addr, err)
		}
		return a, nil
	}
	return Attempt{}, cerr
}
