package probe

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSendSMTPTricklingGreeting: a server that trickles its greeting one
// byte at a time (it would take 10 s) is given up on within --timeout:
// the timeout bounds the whole wait for a reply, not each byte of it.
func TestSendSMTPTricklingGreeting(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		greeting := "220 " + strings.Repeat("a", 496) + "\r\n"
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < len(greeting); i++ {
			select {
			case <-tick.C:
			case <-stop:
				return
			}
			if _, err := c.Write([]byte{greeting[i]}); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a guard, not a measure
	defer cancel()
	p := &Prober{ConnectTimeout: 2 * time.Second}
	r := p.Send(ctx, l.Addr().String(), SMTP, "a@example.test", "b@example.test", time.Second)
	if r.Code != CodeUnexpected || r.Reply != nil || !strings.Contains(r.Error, "greeting") || !strings.Contains(r.Error, "timeout") {
		t.Fatalf("%+v, want a timeout waiting for the greeting", r)
	}
}
