package probe

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// listen returns a listener on 127.0.0.1:0 whose first connection is
// handed to serve; the listener is closed when the test ends.
func listen(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// TestSendSMTPTricklingGreeting: a server that trickles its greeting one
// byte at a time (it would take 10 s) is given up on within --timeout:
// the timeout bounds the whole wait for a reply, not each byte of it.
// (The error said "timeout" when probe had its own SMTP client; proto/smtp's
// says "timed out".)
func TestSendSMTPTricklingGreeting(t *testing.T) {
	stop := make(chan struct{})
	addr := listen(t, func(c net.Conn) {
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
	})
	defer close(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a guard, not a measure
	defer cancel()
	p := &Prober{ConnectTimeout: 2 * time.Second}
	r := p.Send(ctx, addr, SMTP, "a@example.test", "b@example.test", time.Second)
	if r.Verdict != Unexpected || r.Reply != nil || !strings.Contains(r.Error, "greeting") || !strings.Contains(r.Error, "timed out") {
		t.Fatalf("%+v, want a timeout waiting for the greeting", r)
	}
}

// TestSendSMTPEndlessReply: a server that never ends its greeting line
// is cut off at proto/smtp's line limit, not read into memory for ever.
// (The error said "more than" 1 MiB when probe had its own SMTP client
// reading up to 1 MiB of replies; proto/smtp's refuses a line over 2000
// bytes as a protocol violation.)
func TestSendSMTPEndlessReply(t *testing.T) {
	const endless = 4 << 20
	addr := listen(t, func(c net.Conn) {
		c.Write([]byte("220 "))
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		for i := 0; i < endless/len(chunk); i++ {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	p := &Prober{ConnectTimeout: 2 * time.Second}
	r := p.Send(context.Background(), addr, SMTP, "a@example.test", "b@example.test", 5*time.Second)
	if r.Verdict != Unexpected || r.Reply != nil || !strings.Contains(r.Error, "protocol violation") {
		t.Fatalf("%+v", r)
	}
}

// A greeting that refuses the session is the probe's answer: a 554 is a
// D from the server, with no error, as it was before the SMTP client
// moved to proto/smtp.
func TestSendSMTPRefusedGreeting(t *testing.T) {
	addr := listen(t, func(c net.Conn) {
		c.Write([]byte("554 5.7.1 go away\r\n"))
		c.Read(make([]byte, 1))
	})
	p := &Prober{ConnectTimeout: 2 * time.Second}
	r := p.Send(context.Background(), addr, SMTP, "a@example.test", "b@example.test", 5*time.Second)
	if r.Verdict != Unexpected || r.Reply == nil || r.Reply.Status != "D" || !strings.HasPrefix(r.Reply.Text, "554") ||
		r.Error != "" || len(r.SMTP) != 1 || r.SMTP[0] != "greeting -> 554 5.7.1 go away" {
		t.Fatalf("%+v", r)
	}
}

// The harmless probe reads at most one greeting window: a server that
// trickles an SMTP banner without ever ending it is heard as far as it
// got when the wait ends.
func TestListenTricklingBanner(t *testing.T) {
	stop := make(chan struct{})
	addr := listen(t, func(c net.Conn) {
		c.Write([]byte("220-"))
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
			case <-stop:
				return
			}
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
		}
	})
	defer close(stop)
	p := &Prober{ConnectTimeout: 2 * time.Second, Wait: 300 * time.Millisecond}
	r := p.Port(context.Background(), addr, SMTP)
	if r.State != Open || r.Heard != SMTPBanner || r.SMTPCode != 220 || r.Verdict != OK {
		t.Fatalf("%+v", r)
	}
}
