package proto_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"

	"qbox/proto"
)

// closedAddr is an address on which nothing listens (the port was just
// freed).
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// The first server that answers takes the connection; one that refuses is
// skipped. When none answers, the one ConnectError names every attempt and
// errors.Is reaches each attempt's error; with nothing to try it is
// ErrNoServers, a configuration fault.
func TestDialFirst(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	closed := closedAddr(t)
	d := proto.Dialer{Protocol: "qmqp"}
	conn, i, err := d.DialFirst(context.Background(), []string{closed, l.Addr().String()}, nil)
	if err != nil || i != 1 {
		t.Fatalf("index %d, err %v; want the second address", i, err)
	}
	conn.Close()

	_, _, err = d.DialFirst(context.Background(), []string{closed, closedAddr(t)}, func(i int) string { return "QMTP " + closed + " (mx.example)" })
	var ce *proto.ConnectError
	if !errors.As(err, &ce) || len(ce.Tried) != 2 || !ce.Refused() || ce.TimedOut() {
		t.Fatalf("all refused: %v", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, proto.ErrNoServers) {
		t.Fatalf("%v does not unwrap to the refusals", err)
	}
	if !strings.HasPrefix(err.Error(), "qmqp: no server reachable: QMTP ") || !strings.Contains(err.Error(), "(mx.example)") {
		t.Fatalf("message %q", err)
	}

	_, _, err = d.DialFirst(context.Background(), nil, nil)
	if !errors.Is(err, proto.ErrNoServers) || err.Error() != "qmqp: no server configured" {
		t.Fatalf("nothing to try: %v", err)
	}
}
