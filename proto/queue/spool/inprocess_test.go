package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/queue"
	"qbox/proto/queue/bounce"
	"qbox/proto/store/maildir"
)

// The flush tests of flush_peers_test.go run against Postfix; these run
// the same logic against an in-process QMQP server (no peer, no root).

// received is one message a memServer took: its envelope and bytes.
type received struct {
	env proto.Envelope
	msg string
}

// memServer is a QMQP server on 127.0.0.1:0 that keeps what it receives
// in memory. Like Postfix's qmqpd past its hop count, it refuses (D) a
// message to loop@example.test; it takes (K) every other one.
type memServer struct {
	addr string
	mu   sync.Mutex
	got  []received
}

type memDelivery struct {
	s   *memServer
	buf strings.Builder
}

func (s *memServer) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return &memDelivery{s: s}, nil
}

func (d *memDelivery) Write(p []byte) (int, error) { return d.buf.Write(p) }
func (d *memDelivery) Abort()                      {}
func (d *memDelivery) Commit(_ context.Context, env proto.Envelope) []proto.Reply {
	if slices.Contains(env.Recipients, "loop@example.test") {
		return proto.Repeat(len(env.Recipients), proto.D("too many hops (#5.4.6)"))
	}
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	d.s.got = append(d.s.got, received{env, d.buf.String()})
	return proto.Repeat(len(env.Recipients), proto.K("ok"))
}

// messages returns what the server has taken so far.
func (s *memServer) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func startMemServer(t *testing.T) *memServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &memServer{addr: l.Addr().String()}
	srv := &qmqp.Server{Backend: s}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

// A stored message goes as one QMQP message with all its recipients.
func TestFlushGroupsInProcess(t *testing.T) {
	srv := startMemServer(t)
	s := openSpool(t)
	msg := "Subject: grouped\n\ngrouped\n"
	enqueue(t, s, "sender@example.test", msg, "r1@example.test", "r2@example.test")
	enqueue(t, s, "sender@example.test", msg, "r3@example.test") // queued by another run
	enqueue(t, s, "sender@example.test", "Subject: single\n\nsingle\n", "r4@example.test")
	res, err := s.Flush(context.Background(), FlushConfig{Client: client(srv.addr)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 4 || res.Remaining() != 0 || len(queued(t, s)) != 0 {
		t.Fatalf("result %+v, %d files left", res, len(queued(t, s)))
	}
	got := map[string]string{}
	for _, r := range srv.messages() {
		rcpts := slices.Clone(r.env.Recipients)
		slices.Sort(rcpts)
		got[strings.Join(rcpts, ",")] = r.msg
		if r.env.Sender != "sender@example.test" {
			t.Errorf("sender %q", r.env.Sender)
		}
	}
	if len(got) != 3 || !strings.HasSuffix(got["r1@example.test,r2@example.test"], msg) || !strings.HasSuffix(got["r3@example.test"], msg) ||
		!strings.HasSuffix(got["r4@example.test"], "\nsingle\n") {
		t.Fatalf("server got %q, want each stored message as one QMQP message with all its recipients", got)
	}
}

// A D: the bounce function gets the server's reason, and the file goes
// only once the bounce is sent; when it cannot be, the file stays and
// says why.
func TestFlushRefusalBouncesInProcess(t *testing.T) {
	srv := startMemServer(t)
	s := openSpool(t)
	enqueue(t, s, "owner@example.test", "Subject: loop\n\nlooping\n", "loop@example.test")
	var reasons []string
	bounceErr := errors.New("bounce server unreachable")
	bounce := func(ctx context.Context, g *maildir.Group, reason string, tooOld bool) error {
		reasons = append(reasons, reason)
		return bounceErr
	}
	res, err := s.Flush(context.Background(), FlushConfig{Client: client(srv.addr), Bounce: bounce})
	if err != nil {
		t.Fatal(err)
	}
	e := queued(t, s)
	if res.Bounced != 0 || res.Deferred != 1 || len(e) != 1 {
		t.Fatalf("bounce failing: result %+v, %d files; want the file kept", res, len(e))
	}
	if text := e[0].LastError; !strings.Contains(text, "bounce not sent") {
		t.Errorf("last error %q", text)
	}
	bounceErr = nil
	res, err = s.Flush(context.Background(), FlushConfig{Client: client(srv.addr), Bounce: bounce})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 1 || res.Remaining() != 0 || len(queued(t, s)) != 0 {
		t.Fatalf("bounce sent: result %+v, %d files left", res, len(queued(t, s)))
	}
	if len(reasons) != 2 || !strings.Contains(reasons[1], "too many hops") {
		t.Fatalf("bounce reasons %q, want the server's", reasons)
	}
}

// The bounce chain over QMQP: a refused message from a sender goes back
// to the sender (from <>), one from the null sender to the postmaster
// (from #@[]), one from #@[] is discarded; all three files are removed.
func TestFlushQMQPBounceChainInProcess(t *testing.T) {
	srv := startMemServer(t)
	s := openSpool(t)
	enqueue(t, s, "owner@example.test", "Subject: one\n\nlooping\n", "loop@example.test")
	enqueue(t, s, "", "Subject: two\n\nlooping\n", "loop@example.test")
	enqueue(t, s, "#@[]", "Subject: three\n\nlooping\n", "loop@example.test")
	res, err := s.FlushQMQP(context.Background(), client(srv.addr), "example.test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 3 || res.Remaining() != 0 || len(queued(t, s)) != 0 {
		t.Fatalf("result %+v, %d left", res, len(queued(t, s)))
	}
	got := srv.messages()
	if len(got) != 2 {
		t.Fatalf("server got %d messages, want 2 (the triple bounce discarded): %+v", len(got), got)
	}
	for _, r := range got {
		switch {
		case slices.Equal(r.env.Recipients, []string{"owner@example.test"}):
			if r.env.Sender != "" || !strings.Contains(r.msg, "Subject: one") || !strings.Contains(r.msg, "Diagnostic-Code: X-QMQP; ") {
				t.Errorf("bounce from %q:\n%s", r.env.Sender, r.msg)
			}
		case slices.Equal(r.env.Recipients, []string{"postmaster@example.test"}):
			if r.env.Sender != "#@[]" || !strings.Contains(r.msg, "Subject: two") {
				t.Errorf("double bounce from %q:\n%s", r.env.Sender, r.msg)
			}
		default:
			t.Errorf("unexpected message to %v:\n%s", r.env.Recipients, r.msg)
		}
	}
}

// A message past its lifetime that still cannot be sent bounces as too
// old, even when the run already found every server unreachable.
func TestFlushExpiredBouncesInProcess(t *testing.T) {
	srv := startMemServer(t)
	s := openSpool(t)
	old := time.Now().Add(-15 * 24 * time.Hour)
	for i, sub := range []string{"old1", "old2"} {
		enqueueAt(t, s, old, "owner@example.test", "Subject: "+sub+"\n\nx\n", fmt.Sprintf("r%d@example.test", i))
	}
	enqueue(t, s, "owner@example.test", "Subject: young\n\nx\n", "r9@example.test")
	res, err := s.Flush(context.Background(), FlushConfig{
		Client:   client(closedAddr(t)),
		Bouncer:  &queue.QMQPBouncer{Config: bounce.Config{Hostname: "example.test"}, Client: client(srv.addr)},
		Lifetime: queue.DefaultLifetime,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 2 || res.Deferred != 1 {
		t.Fatalf("result %+v, want 2 bounced (too old) and 1 deferred", res)
	}
	got := srv.messages()
	if len(got) != 2 {
		t.Fatalf("server got %d bounces, want 2", len(got))
	}
	for _, r := range got {
		if !slices.Equal(r.env.Recipients, []string{"owner@example.test"}) || !strings.Contains(r.msg, "Subject: old") || !strings.Contains(r.msg, "too old") {
			t.Errorf("expiry bounce to %v does not say the message was too old:\n%s", r.env.Recipients, r.msg)
		}
	}
	if e := queued(t, s); len(e) != 1 || e[0].Recipient != "r9@example.test" {
		t.Fatalf("left %+v, want the young message only", e)
	}
}

// FlushQMQP applies the lifetime to malformed files too: one older than 14
// days is reported to postmaster@hostname over QMQP, with its contents,
// and removed; a young one stays, reported.
func TestFlushQMQPMalformedPastLifetimeInProcess(t *testing.T) {
	srv := startMemServer(t)
	s := openSpool(t)
	old := filepath.Join(s.Dir, "new", "old-garbage")
	young := filepath.Join(s.Dir, "new", "young-garbage")
	for _, p := range []string{old, young} {
		if err := os.WriteFile(p, []byte("Subject: garbage\n\nno envelope here\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mt := time.Now().Add(-15 * 24 * time.Hour)
	if err := os.Chtimes(old, mt, mt); err != nil {
		t.Fatal(err)
	}
	res, err := s.FlushQMQP(context.Background(), client(srv.addr), "example.test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 1 || len(res.Malformed) != 1 || res.Malformed[0].Name != "new/young-garbage" || res.Remaining() != 1 {
		t.Fatalf("result %+v, want the old file reported and the young one left", res)
	}
	if _, err := os.Lstat(old); !os.IsNotExist(err) {
		t.Errorf("the expired malformed file is still there: %v", err)
	}
	got := srv.messages()
	if len(got) != 1 || got[0].env.Sender != "#@[]" || !slices.Equal(got[0].env.Recipients, []string{"postmaster@example.test"}) {
		t.Fatalf("server got %+v, want one report from #@[] to postmaster@example.test", got)
	}
	for _, want := range []string{"new/old-garbage", "no envelope here"} {
		if !strings.Contains(got[0].msg, want) {
			t.Errorf("report lacks %q:\n%s", want, got[0].msg)
		}
	}
}

// A bounce the hub refuses for good goes once to the postmaster (a
// double bounce, the original's header only); when the postmaster's
// address is refused too the notice is dropped and logged, and the
// message leaves: never a loop, never stuck, one notice per message.
func TestRefusedBounceGoesToPostmasterOnce(t *testing.T) {
	srv := startMemServer(t)
	s := openSpool(t)
	// The server refuses mail to loop@example.test: the message and its
	// bounce (to that sender) alike.
	enqueue(t, s, "loop@example.test", "Subject: refused\nX-Marker: original\n\nbody\n", "loop@example.test")
	res, err := s.Flush(context.Background(), FlushConfig{Client: client(srv.addr),
		Bouncer: &queue.QMQPBouncer{Config: bounce.Config{Hostname: "example.test"}, Client: client(srv.addr)}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 1 || res.Remaining() != 0 {
		t.Fatalf("flush %+v, want the message bounced (to the postmaster) and gone", res)
	}
	got := srv.messages()
	if len(got) != 1 || !slices.Equal(got[0].env.Recipients, []string{"postmaster@example.test"}) || got[0].env.Sender != bounce.DoubleBounceSender ||
		!strings.Contains(got[0].msg, "text/rfc822-headers") || !strings.Contains(got[0].msg, "X-Marker: original") ||
		!strings.Contains(got[0].msg, "<loop@example.test> was refused") {
		t.Fatalf("server got %+v, want one double bounce to the postmaster from #@[]", got)
	}

	var log strings.Builder
	enqueue(t, s, "loop@example.test", "Subject: refused again\n\nbody\n", "loop@example.test")
	res, err = s.Flush(context.Background(), FlushConfig{Client: client(srv.addr), Log: slog.New(slog.NewTextHandler(&log, nil)),
		Bouncer: &queue.QMQPBouncer{Config: bounce.Config{Hostname: "example.test", Postmaster: "loop@example.test"}, Client: client(srv.addr)}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 1 || res.Remaining() != 0 || len(srv.messages()) != 1 {
		t.Fatalf("flush %+v, server holds %d; want the message dropped and nothing more sent", res, len(srv.messages()))
	}
	if !strings.Contains(log.String(), "discarded") {
		t.Errorf("the dropped double bounce is not logged:\n%s", log.String())
	}
	if l, err := s.Messages(); err != nil || len(l.Messages) != 0 {
		t.Errorf("left queued: %+v %v", l, err)
	}
}

// A bounce the server only defers keeps the message, marked stuck (the
// check's CRITICAL), and the next run that can bounce clears it.
func TestBounceDeferredMarksStuck(t *testing.T) {
	srv := startMemServer(t)
	s := openSpool(t)
	enqueue(t, s, "owner@example.test", "Subject: x\n\nx\n", "loop@example.test")
	res, err := s.Flush(context.Background(), FlushConfig{Client: client(srv.addr),
		Bouncer: &queue.QMQPBouncer{Config: bounce.Config{Hostname: "example.test"}, Client: client(closedAddr(t))}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Messages()
	if err != nil || res.Bounced != 0 || len(l.Messages) != 1 || !l.Messages[0].Stuck || l.Count().Stuck != 1 {
		t.Fatalf("flush %+v, listing %+v %v; want the message kept and stuck", res, l, err)
	}
	res, err = s.Flush(context.Background(), FlushConfig{Client: client(srv.addr),
		Bouncer: &queue.QMQPBouncer{Config: bounce.Config{Hostname: "example.test"}, Client: client(srv.addr)}})
	if err != nil || res.Bounced != 1 || res.Remaining() != 0 {
		t.Fatalf("second flush %+v %v", res, err)
	}
}

// A message the server deferred (Z) backs off: the next plain run leaves
// it alone (and says it remains), a selection naming it sends it at once;
// an unreachable hub does not lengthen the wait.
func TestDeferredBacksOff(t *testing.T) {
	s := openSpool(t)
	enqueue(t, s, "owner@example.test", "Subject: x\n\nx\n", "r@example.test")
	z := &countingSender{reply: proto.Z("busy")}
	if _, err := s.Flush(context.Background(), FlushConfig{Client: z}); err != nil {
		t.Fatal(err)
	}
	l, _ := s.Messages()
	if z.n != 1 || len(l.Messages) != 1 || l.Messages[0].Attempts != 1 || time.Until(l.Messages[0].NextAttempt) < MinBackoff-time.Minute {
		t.Fatalf("after a Z: %d sent, %+v; want one attempt and the next in about %v", z.n, l.Messages, MinBackoff)
	}
	res, err := s.Flush(context.Background(), FlushConfig{Client: z})
	if err != nil || z.n != 1 || len(queued(t, s)) != 1 {
		t.Fatalf("a run while backing off: %d sent, %+v %v; want nothing sent and the message still queued", z.n, res, err)
	}
	sel, _ := ParseSelection([]string{"I" + l.Messages[0].ID})
	if _, err := s.Flush(context.Background(), FlushConfig{Client: z, Select: sel}); err != nil || z.n != 2 {
		t.Fatalf("a selected run: %d sent, %v; want it sent", z.n, err)
	}
	l, _ = s.Messages()
	if l.Messages[0].Attempts != 2 || time.Until(l.Messages[0].NextAttempt) < 2*MinBackoff-time.Minute {
		t.Fatalf("after the second Z: %+v; want the wait doubled", l.Messages[0])
	}
	if Backoff(1) != MinBackoff || Backoff(2) != 2*MinBackoff || Backoff(30) != MaxBackoff {
		t.Errorf("Backoff: %v %v %v", Backoff(1), Backoff(2), Backoff(30))
	}
}

// countingSender answers every message with reply.
type countingSender struct {
	reply proto.Reply
	n     int
}

func (c *countingSender) Send(ctx context.Context, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error) {
	io.Copy(io.Discard, msg)
	c.n++
	if c.reply.Status == proto.OK {
		return c.reply, nil
	}
	return c.reply, &proto.Error{Reply: c.reply}
}

// qbox queue flush's source (SourceForce with force) offers a message
// that is backing off; the plain one (sendmail -q) does not.
func TestForcedSourceIgnoresBackoff(t *testing.T) {
	s := openSpool(t)
	enqueue(t, s, "owner@example.test", "Subject: x\n\nx\n", "r@example.test")
	z := &countingSender{reply: proto.Z("busy")}
	if _, err := s.Flush(context.Background(), FlushConfig{Client: z}); err != nil || z.n != 1 {
		t.Fatalf("first run: %d sent, %v", z.n, err)
	}
	for _, c := range []struct {
		force bool
		sent  int
	}{{false, 1}, {true, 2}} {
		qc := queue.QMQPRelay(s.SourceForce(nil, c.force), z, "example.test")
		sum, err := queue.Run(context.Background(), qc)
		if !errors.Is(err, queue.ErrRemaining) || z.n != c.sent || sum.Remaining != 1 {
			t.Fatalf("force %v: %d sent, %+v %v; want %d sent and the message remaining", c.force, z.n, sum, err, c.sent)
		}
	}
}

// perRecipient is a transport whose reply depends on the recipient: D
// for one starting "d", Z for "z", K otherwise.
type perRecipient struct{}

func (perRecipient) Deliver(ctx context.Context, pkgs []proto.Message, onResult func(proto.Result)) (queue.Stats, error) {
	for i, p := range pkgs {
		rc, err := p.Open()
		if err == nil {
			io.Copy(io.Discard, rc)
			rc.Close()
		}
		for j, r := range p.Recipients {
			reply := proto.K("ok")
			switch r[0] {
			case 'd':
				reply = proto.D("no such user (#5.1.1)")
			case 'z':
				reply = proto.Z("mailbox busy (#4.2.1)")
			}
			onResult(proto.Result{Message: i, Recipient: j, Reply: reply, FromServer: true, Server: "test", Protocol: "QMTP"})
		}
	}
	return queue.Stats{Sessions: 1}, nil
}

// Each recipient of a stored message keeps its own state: delivered,
// bounced, deferred with its error; the message stays, stored once, for
// the one still to deliver.
func TestPerRecipientState(t *testing.T) {
	srv := startMemServer(t)
	s := openSpool(t)
	enqueue(t, s, "owner@example.test", "Subject: x\n\nx\n", "k@example.test", "d@example.test", "z@example.test")
	qc := queue.Config{Source: s.Source(nil), Transport: perRecipient{}, Rounds: 1,
		Bouncer: &queue.QMQPBouncer{Config: bounce.Config{Hostname: "example.test"}, Client: client(srv.addr)}}
	if _, err := queue.Run(context.Background(), qc); !errors.Is(err, queue.ErrRemaining) {
		t.Fatal(err)
	}
	l, err := s.Messages()
	if err != nil || len(l.Messages) != 1 {
		t.Fatalf("listing %+v %v", l, err)
	}
	m := l.Messages[0]
	codes := ""
	for _, rs := range m.States {
		codes += string(rs.Code)
	}
	if codes != "dbz" || !slices.Equal(m.Recipients, []string{"z@example.test"}) || !strings.Contains(m.States[2].Text, "mailbox busy") ||
		!strings.Contains(m.States[1].Text, "bounce to <owner@example.test> accepted") || m.Attempts != 1 {
		t.Fatalf("states %q %+v, recipients %v, attempts %d", codes, m.States, m.Recipients, m.Attempts)
	}
	if got := srv.messages(); len(got) != 1 || !strings.Contains(got[0].msg, "d@example.test") || strings.Contains(got[0].msg, "<z@example.test>") {
		t.Fatalf("bounces %+v, want one for d@ only", got)
	}
}
