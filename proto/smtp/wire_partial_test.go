package smtp

import (
	"errors"
	"strings"
	"testing"
	"time"

	"qbox/proto"
)

// A greeting cut short (no line end) and then silence is a timeout: the
// half line is never taken for a greeting, so no EHLO is sent.
func TestPartialGreetingIsNoGreeting(t *testing.T) {
	heard := make(chan string, 1)
	addr := startServer(t, func(p *peer) {
		p.send("220 half a greeting")
		l, _ := p.line() // whatever comes before the client gives up
		heard <- l
	})
	msgs := []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@example.test")}
	_, err := deliver(t, &Client{CommandTimeout: time.Second}, addr, msgs)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if l := <-heard; strings.Contains(strings.ToUpper(l), "HELO") {
		t.Fatalf("the client answered a half greeting with %q", l)
	}
}

// A greeting line longer than a reply line may be is refused, however it
// arrives.
func TestEndlessGreetingLine(t *testing.T) {
	addr := startServer(t, func(p *peer) {
		p.send("220 " + strings.Repeat("x", 3*maxReplyLine))
		p.line()
	})
	msgs := []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@example.test")}
	_, err := deliver(t, &Client{CommandTimeout: 30 * time.Second}, addr, msgs)
	if !errors.Is(err, proto.ErrRemoteViolation) {
		t.Fatalf("err %v, want proto.ErrRemoteViolation", err)
	}
}
