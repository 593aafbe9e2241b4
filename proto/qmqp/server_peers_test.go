//go:build peers

package qmqp_test

import (
	"bytes"
	"context"
	"os/exec"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/testkit/testpeer"
)

// Postfix's qmqp-source, a real QMQP client, against the server: every
// message it sends is answered K and arrives, none lost.
func TestServerPostfixQmqpSource(t *testing.T) {
	source := testpeer.Require(t, "qmqp-source", "postfix")
	for _, tc := range []struct {
		name                 string
		args                 []string
		messages, recipients int
	}{
		{"20 sessions x 5000 messages", []string{"-s", "20", "-m", "5000"}, 5000, 1},
		{"one 1000-recipient message", []string{"-r", "1000"}, 1, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &serverBackend{}
			addr, out := serverStart(t, newServerForTest(b))
			args := append(append([]string{}, tc.args...), "-M", "example.test", "inet:"+addr)
			cmd := exec.Command(source, args...)
			cmd.WaitDelay = 10 * time.Second
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- cmd.Run() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("qmqp-source: %v\n%s", err, stderr.Bytes())
				}
			case <-ctx.Done():
				cmd.Process.Kill()
				t.Fatalf("qmqp-source did not finish")
			}
			// Every session has ended by the time qmqp-source has read
			// its reply; collect the outcomes.
			for i := 0; i < tc.messages; i++ {
				o := serverWaitOutcome(t, out)
				if o.err != nil || o.res.Reply.Status != proto.OK {
					t.Fatalf("session %d: %+v %v", i, o.res, o.err)
				}
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if len(b.committed) != tc.messages || b.aborted != 0 {
				t.Fatalf("%d messages committed, %d aborted; want %d committed", len(b.committed), b.aborted, tc.messages)
			}
			for _, m := range b.committed {
				if len(m.Env.Recipients) != tc.recipients || m.Size != int64(len(m.Body)) || len(m.Body) == 0 {
					t.Fatalf("message with %d recipients, size %d, body %d bytes", len(m.Env.Recipients), m.Size, len(m.Body))
				}
			}
			if len(b.misuse) > 0 {
				t.Errorf("delivery misuse: %v", b.misuse)
			}
		})
	}
}
