package spool

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"qbox/proto"
)

// stopDuringSend is a Sender that closes stop while the first message is
// being sent, then answers it with reply.
type stopDuringSend struct {
	stop  chan struct{}
	reply proto.Reply
	sent  []string
}

func (s *stopDuringSend) Send(ctx context.Context, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error) {
	body, _ := io.ReadAll(msg)
	s.sent = append(s.sent, string(body))
	if len(s.sent) == 1 {
		close(s.stop)
	}
	return s.reply, nil
}

// Asked to stop while a message is being sent, the flush finishes that
// message — removing its file only on K — and starts no other: the rest
// stays queued, untried, and the result says interrupted.
func TestFlushStopStartingFinishesCurrentMessage(t *testing.T) {
	for _, reply := range []proto.Reply{proto.K("ok"), proto.Z("busy")} {
		t.Run(reply.String(), func(t *testing.T) {
			sp := openSpool(t)
			for i := 0; i < 3; i++ {
				enqueue(t, sp, "a@example.test", fmt.Sprintf("Subject: %d\n\nmessage %d\n", i, i), fmt.Sprintf("r%d@example.test", i))
			}
			sender := &stopDuringSend{stop: make(chan struct{}), reply: reply}
			ctx := proto.WithStopStarting(context.Background(), sender.stop)
			res, err := sp.Flush(ctx, FlushConfig{Client: sender})
			if err != nil {
				t.Fatal(err)
			}
			if len(sender.sent) != 1 {
				t.Fatalf("%d messages sent after the stop, want only the one under way", len(sender.sent))
			}
			if !res.Interrupted || res.NotStarted != 2 {
				t.Errorf("result %+v, want interrupted with 2 not started", res)
			}
			left := queued(t, sp)
			wantLeft := 2
			if reply.Status != proto.OK {
				wantLeft = 3
			}
			if len(left) != wantLeft || res.Remaining() != wantLeft {
				t.Fatalf("%d files left (Remaining %d), want %d", len(left), res.Remaining(), wantLeft)
			}
			sentRcpt := ""
			for i := 0; i < 3; i++ {
				if strings.Contains(sender.sent[0], fmt.Sprintf("message %d\n", i)) {
					sentRcpt = fmt.Sprintf("r%d@example.test", i)
				}
			}
			stillThere := false
			for _, e := range left {
				if e.Recipient == sentRcpt {
					stillThere = true
				}
			}
			if stillThere != (reply.Status != proto.OK) {
				t.Errorf("the message sent (to %s) is left: %v, after %v", sentRcpt, stillThere, reply)
			}
		})
	}
}
