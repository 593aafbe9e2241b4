package proto

import (
	"testing"
	"time"
)

func TestAppendReceived(t *testing.T) {
	at := time.Date(2024, 3, 5, 6, 7, 8, 0, time.FixedZone("CET", 3600))
	cases := []struct {
		peer  Peer
		local string
		want  string
	}{
		{Peer{}, "me", "Received: from unknown by me with QMQP; 5 Mar 2024 05:07:08 -0000\n"},
		{Peer{Protocol: "QMTP", RemoteIP: "::1", RemoteHost: "a.example"}, "mx", "Received: from a.example (::1) by mx with QMTP; 5 Mar 2024 05:07:08 -0000\n"},
		{Peer{RemoteIP: "1.2.3.4", RemoteHost: "x\r\nX-Evil: 1 (y)"}, "m x\n", "Received: from x??X-Evil:?1??y? (1.2.3.4) by m?x? with QMQP; 5 Mar 2024 05:07:08 -0000\n"},
	}
	for _, c := range cases {
		if got := string(AppendReceived(nil, c.peer, c.local, at)); got != c.want {
			t.Errorf("AppendReceived(%+v, %q) = %q, want %q", c.peer, c.local, got, c.want)
		}
	}
}
