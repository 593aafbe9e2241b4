//go:build peers

package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/queue"
	"qbox/proto/queue/bounce"
	"qbox/proto/store/maildir"
	"qbox/proto/testkit/testpeer"
)

// A stored message goes as one QMQP message with all its recipients, and
// old-layout files with the same sender and identical content (queued
// before an upgrade) still go as one: Postfix gives all recipients of
// one message the same queue id.
func TestFlushGroupsIntoOneMessage(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	s := openSpool(t)
	tok := testpeer.Token(t)
	msg := "Subject: " + tok + "\n\ngrouped\n"
	enqueue(t, s, "sender@example.test", msg, "r1@example.test", "r2@example.test", "r3@example.test")
	other := "Subject: " + tok + "\n\nsingle\n"
	legacyEnqueue(t, s.Dir, proto.Envelope{Sender: "sender@example.test", Recipients: []string{"r4@example.test"}}, other, "")

	res, err := s.Flush(context.Background(), FlushConfig{Client: client(pf.QMQPAddr)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 4 || res.Remaining() != 0 {
		t.Fatalf("result %+v", res)
	}
	if n := len(queued(t, s)); n != 0 {
		t.Fatalf("%d files left after K", n)
	}
	if errs, _ := os.ReadDir(filepath.Join(s.Dir, "err")); len(errs) != 0 {
		t.Fatalf("%d error files left", len(errs))
	}
	got := pf.WaitFor(t, tok, 4, 30*time.Second)
	queueID := regexp.MustCompile(`with QMQP\s+id ([0-9A-F]+)`)
	ids := map[string][]string{}
	for _, m := range got {
		id := queueID.FindSubmatch(m)
		if id == nil {
			t.Fatalf("no Postfix queue id in %q", m)
		}
		ids[string(id[1])] = append(ids[string(id[1])], string(testpeer.Body(m)))
	}
	if len(ids) != 2 {
		t.Fatalf("delivered as %d messages, want 2 (the stored one with 3 recipients, the old file): %v", len(ids), ids)
	}
	for _, bodies := range ids {
		if len(bodies) != 3 && len(bodies) != 1 {
			t.Errorf("a message reached %d recipients: %v", len(bodies), bodies)
		}
	}
}

// A D reply: the message is returned to its sender (the bounce reaches
// Postfix) and only then removed. Postfix's qmqpd answers D to a message
// with more Received lines than hopcount_limit (50).
func TestFlushPermanentFailureBounces(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	s := openSpool(t)
	tok := testpeer.Token(t)
	var hdr strings.Builder
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&hdr, "Received: from hop%d by hop%d; Thu, 1 Jan 2025 00:00:00 +0000\n", i, i+1)
	}
	msg := hdr.String() + "Subject: loop " + tok + "\n\nlooping\n"
	enqueue(t, s, "owner-"+tok+"@example.test", msg, "loop@example.test")

	var reasons []string
	bounce := func(ctx context.Context, g *maildir.Group, reason string, tooOld bool) error {
		reasons = append(reasons, reason)
		text := fmt.Sprintf("To: %s\nSubject: bounce for %s\n\n%s\n", g.Sender, tok, reason)
		r, err := client(pf.QMQPAddr).Send(ctx, proto.Envelope{Recipients: []string{g.Sender}}, strings.NewReader(text), int64(len(text)))
		if err != nil {
			return err
		}
		return r.Err()
	}
	res, err := s.Flush(context.Background(), FlushConfig{Client: client(pf.QMQPAddr), Bounce: bounce})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 1 || res.Remaining() != 0 {
		t.Fatalf("result %+v", res)
	}
	if len(reasons) != 1 || !strings.Contains(reasons[0], "hops") {
		t.Fatalf("bounce reasons %q, want Postfix's too many hops", reasons)
	}
	got := pf.WaitFor(t, "bounce for "+tok, 1, 30*time.Second)
	if !bytes.Contains(got[0], []byte("owner-"+tok)) {
		t.Errorf("bounce not addressed to the sender:\n%s", got[0])
	}
	if n := len(queued(t, s)); n != 0 {
		t.Fatalf("%d files left after the bounce", n)
	}
}

// When the bounce cannot be sent, the file stays and says why.
func TestFlushBounceFailureKeeps(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	s := openSpool(t)
	var hdr strings.Builder
	for i := 0; i < 60; i++ {
		hdr.WriteString("Received: from a by b; Thu, 1 Jan 2025 00:00:00 +0000\n")
	}
	enqueue(t, s, "x@example.test", hdr.String()+"\nbody\n", "loop@example.test")
	bounce := func(ctx context.Context, g *maildir.Group, reason string, tooOld bool) error {
		return errors.New("bounce server unreachable")
	}
	res, err := s.Flush(context.Background(), FlushConfig{Client: client(pf.QMQPAddr), Bounce: bounce})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 0 || res.Deferred != 1 {
		t.Fatalf("result %+v", res)
	}
	e := queued(t, s)
	if len(e) != 1 {
		t.Fatalf("%d files, want the one that could not be bounced", len(e))
	}
	if text := e[0].LastError; !strings.Contains(text, "bounce not sent") {
		t.Errorf("last error %q", text)
	}
}

func loopingMessage(subject string) string {
	var b strings.Builder
	for i := 0; i < 60; i++ {
		b.WriteString("Received: from a by b; Thu, 1 Jan 2025 00:00:00 +0000\n")
	}
	return b.String() + "Subject: " + subject + "\n\nlooping\n"
}

// The bounce chain with proto/queue/bounce over QMQP: a refused message from a
// sender goes back to the sender, one from the null sender to the
// postmaster (from #@[]), one from #@[] is discarded; all are removed.
func TestFlushQMQPBounceChain(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	s := openSpool(t)
	tok := testpeer.Token(t)
	enqueue(t, s, "owner-"+tok+"@example.test", loopingMessage("one "+tok), "loop@example.test")
	enqueue(t, s, "", loopingMessage("two "+tok), "loop@example.test")
	enqueue(t, s, "#@[]", loopingMessage("three "+tok), "loop@example.test")
	res, err := s.FlushQMQP(context.Background(), client(pf.QMQPAddr), "example.test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 3 || res.Remaining() != 0 || len(queued(t, s)) != 0 {
		t.Fatalf("result %+v, %d left", res, len(queued(t, s)))
	}
	// Every message sent had its reply, so Postfix holds all of them: once
	// its queue holds none, every delivery there will be is in the maildir.
	pf.WaitFor(t, tok, 2, 30*time.Second)
	pf.WaitDrained(t, tok, 30*time.Second)
	got := pf.WaitFor(t, tok, 2, time.Second)
	var toSender, toPostmaster int
	for _, m := range got {
		switch {
		case bytes.Contains(m, []byte("Delivered-To: owner-"+tok+"@example.test")):
			toSender++
			if !bytes.Contains(m, []byte("Return-Path: <>")) || !bytes.Contains(m, []byte("Subject: one "+tok)) {
				t.Errorf("bounce:\n%s", m)
			}
			// The refusal came from a QMQP server, and the report says so.
			if !bytes.Contains(m, []byte("Diagnostic-Code: X-QMQP; ")) {
				t.Errorf("bounce without a QMQP Diagnostic-Code:\n%s", m)
			}
		case bytes.Contains(m, []byte("Delivered-To: postmaster@example.test")):
			toPostmaster++
			if !bytes.Contains(m, []byte("Return-Path: <#@[]>")) || !bytes.Contains(m, []byte("Subject: two "+tok)) {
				t.Errorf("double bounce:\n%s", m)
			}
		default:
			t.Errorf("unexpected delivery:\n%s", m)
		}
	}
	if toSender != 1 || toPostmaster != 1 {
		t.Errorf("%d bounces to the sender, %d to the postmaster; want 1 and 1 (the triple bounce discarded)", toSender, toPostmaster)
	}
}

// A message past its lifetime that still cannot be sent bounces as too
// old, even when the run already found every server unreachable.
func TestFlushExpiredBounces(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	s := openSpool(t)
	tok := testpeer.Token(t)
	old := time.Now().Add(-15 * 24 * time.Hour)
	for i, sub := range []string{"old1", "old2"} {
		enqueueAt(t, s, old, "owner-"+tok+"@example.test", "Subject: "+sub+" "+tok+"\n\nx\n", fmt.Sprintf("r%d@example.test", i))
	}
	enqueue(t, s, "owner-"+tok+"@example.test", "Subject: young "+tok+"\n\nx\n", "r9@example.test")
	bounceVia := client(pf.QMQPAddr)
	res, err := s.Flush(context.Background(), FlushConfig{
		Client:   client(closedAddr(t)),
		Bouncer:  &queue.QMQPBouncer{Config: bounce.Config{Hostname: "example.test"}, Client: bounceVia},
		Lifetime: queue.DefaultLifetime,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 2 || res.Deferred != 1 {
		t.Fatalf("result %+v, want 2 bounced (too old) and 1 deferred", res)
	}
	for _, m := range pf.WaitFor(t, tok, 2, 30*time.Second) {
		if !bytes.Contains(m, []byte("Subject: old")) || !bytes.Contains(m, []byte("too old")) {
			t.Errorf("expiry bounce does not say the message was too old:\n%s", m)
		}
	}
	if e := queued(t, s); len(e) != 1 || e[0].Recipient != "r9@example.test" {
		t.Fatalf("left %+v, want the young message only", e)
	}
}
