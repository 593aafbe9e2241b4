package probe

import (
	"net"
	"testing"

	"qbox/proto"
)

// probe --send wraps its connection to time it; the clients must still
// see the socket underneath to judge an early reply there (issue 20).
func TestTimingConnKeepsTheArrivalMark(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if m := proto.MarkArrivals(&timingConn{Conn: raw}); !m.Known {
		t.Fatalf("mark %+v through timingConn: want it known", m)
	}
}
