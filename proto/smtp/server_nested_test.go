package smtp_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/smtp"
	"qbox/proto/testkit/servetest"
)

// envelopeBackend records the envelope of every committed message.
type envelopeBackend struct {
	mu   sync.Mutex
	envs []proto.Envelope
}

type envelopeDelivery struct{ b *envelopeBackend }

func (b *envelopeBackend) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return envelopeDelivery{b}, nil
}
func (envelopeDelivery) Write(p []byte) (int, error) { return len(p), nil }
func (envelopeDelivery) Abort()                      {}
func (d envelopeDelivery) Commit(_ context.Context, env proto.Envelope) []proto.Reply {
	d.b.mu.Lock()
	d.b.envs = append(d.b.envs, env)
	d.b.mu.Unlock()
	return proto.Repeat(len(env.Recipients), proto.K("ok"))
}

// A MAIL inside a transaction is refused (503 5.5.1, as Postfix answers a
// nested MAIL): it must not become the sender of recipients given for
// another one (RFC 5321 4.1.1.2), and the transaction under way goes on.
func TestNestedMailRefused(t *testing.T) {
	b := &envelopeBackend{}
	addr, _ := servetest.Start(t, &smtp.Server{Backend: b, Hostname: "mx.test"})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	in := bufio.NewReader(c)
	say := func(cmd, want string) {
		t.Helper()
		if cmd != "" {
			c.Write([]byte(cmd + "\r\n"))
		}
		for {
			line, err := in.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", cmd, err)
			}
			if len(line) >= 4 && line[3] == '-' {
				continue
			}
			if !strings.HasPrefix(line, want) {
				t.Fatalf("%q answered %q, want %s", cmd, line, want)
			}
			return
		}
	}
	say("", "220 ")
	say("EHLO client.test", "250 ")
	say("MAIL FROM:<a@example.test>", "250 ")
	say("RCPT TO:<c@example.test>", "250 ")
	say("MAIL FROM:<e@example.test>", "503 5.5.1 ")
	say("RCPT TO:<g@example.test>", "250 ")
	say("DATA", "354 ")
	say("Subject: x\r\n\r\nhi\r\n.", "250 ")
	say("QUIT", "221 ")
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.envs) != 1 || b.envs[0].Sender != "a@example.test" || strings.Join(b.envs[0].Recipients, ",") != "c@example.test,g@example.test" {
		t.Fatalf("committed %+v, want one message from a@ to c@ and g@", b.envs)
	}
}
