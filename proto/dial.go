package proto

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"time"
)

// DialFunc makes a connection; net.Dialer.DialContext is one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// ErrNoServers is what a ConnectError with no attempt unwraps to: there
// was nothing to connect to, which is a configuration fault, not a network
// one, so retrying cannot help.
var ErrNoServers = errors.New("no server configured")

// ConnectAttempt is one failed connection attempt.
type ConnectAttempt struct {
	Addr string // host:port dialled
	// Name says more about the target when the caller has more to say
	// (MXPS's protocol and exchanger name); "" shows Addr alone.
	Name string
	Err  error
}

func (a ConnectAttempt) String() string {
	if a.Name != "" {
		return a.Name + ": " + a.Err.Error()
	}
	return a.Addr + ": " + a.Err.Error()
}

// ConnectError means no server could be reached: nothing was sent, so the
// mail may be tried again anywhere. It unwraps to every attempt's error
// (errors.Is(err, syscall.ECONNREFUSED) asks whether any was refused), or
// to ErrNoServers when there was nothing to try.
type ConnectError struct {
	Protocol string // "qmqp", "qmtp", "smtp", "mxps": the message's prefix
	Tried    []ConnectAttempt
}

func (e *ConnectError) Error() string {
	prefix := ""
	if e.Protocol != "" {
		prefix = e.Protocol + ": "
	}
	if len(e.Tried) == 0 {
		return prefix + ErrNoServers.Error()
	}
	parts := make([]string, len(e.Tried))
	for i, t := range e.Tried {
		parts[i] = t.String()
	}
	return prefix + "no server reachable: " + strings.Join(parts, "; ")
}

// Unwrap gives each attempt's error, or ErrNoServers when there was none.
func (e *ConnectError) Unwrap() []error {
	if len(e.Tried) == 0 {
		return []error{ErrNoServers}
	}
	errs := make([]error, len(e.Tried))
	for i, t := range e.Tried {
		errs[i] = t.Err
	}
	return errs
}

// Temporary reports whether trying again later may help: true when
// servers were tried and none answered, false when there was nothing to
// try (ErrNoServers: a configuration fault).
func (e *ConnectError) Temporary() bool { return len(e.Tried) > 0 }

// TimedOut reports whether the last attempt timed out (qmail-qmqpc's 72).
func (e *ConnectError) TimedOut() bool {
	if len(e.Tried) == 0 {
		return false
	}
	last := e.Tried[len(e.Tried)-1].Err
	var ne net.Error
	return errors.As(last, &ne) && ne.Timeout() || errors.Is(last, context.DeadlineExceeded)
}

// Refused reports whether the last attempt was refused (qmail-qmqpc's 73).
func (e *ConnectError) Refused() bool {
	return len(e.Tried) > 0 && errors.Is(e.Tried[len(e.Tried)-1].Err, syscall.ECONNREFUSED)
}

// DefaultConnectTimeout bounds one connection attempt when a Dialer says 0.
const DefaultConnectTimeout = 10 * time.Second

// Dialer connects to the first of a list of servers that answers: the
// one loop every client (QMQP, QMTP, SMTP, MXPS) uses.
type Dialer struct {
	Dial     DialFunc      // nil: a net.Dialer
	Timeout  time.Duration // per attempt; 0: DefaultConnectTimeout
	Protocol string        // names the ConnectError
}

// DialFirst dials addrs in order and returns the first connection made and
// its index. Only a failed connect moves on to the next address; when ctx
// ends, no further address is tried. With no connection it returns a
// *ConnectError naming each attempt (name(i), if name is not nil, says
// more about addrs[i]).
func (d Dialer) DialFirst(ctx context.Context, addrs []string, name func(i int) string) (net.Conn, int, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	cerr := &ConnectError{Protocol: d.Protocol}
	for i, addr := range addrs {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		conn, err := dial(dctx, "tcp", addr)
		cancel()
		if err == nil {
			return conn, i, nil
		}
		a := ConnectAttempt{Addr: addr, Err: err}
		if name != nil {
			a.Name = name(i)
		}
		cerr.Tried = append(cerr.Tried, a)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, -1, cerr
}
