package qmtp_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/qmtp"
)

// orderBackend commits by message body: "one" blocks until the Commit of
// "two" has been called (so, if the server commits in parallel, "one"
// finishes after "two"); "two" fails, Z for one recipient and D for the
// other; every other message gets K naming its body.
type orderBackend struct {
	twoCalled chan struct{}
	once      sync.Once
}

type orderDelivery struct {
	b    *orderBackend
	body bytes.Buffer
}

func (b *orderBackend) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return &orderDelivery{b: b}, nil
}

func (d *orderDelivery) Write(p []byte) (int, error) { return d.body.Write(p) }
func (d *orderDelivery) Abort()                      {}

func (d *orderDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	name := strings.TrimSpace(d.body.String())
	out := make([]proto.Reply, len(env.Recipients))
	switch name {
	case "one":
		select {
		case <-d.b.twoCalled:
		case <-time.After(20 * time.Second): // a guard, not a synchronisation
			return fillReplies(out, proto.Z("Commit of two was never called while one's ran"))
		}
		return fillReplies(out, proto.K("ok one"))
	case "two":
		d.b.once.Do(func() { close(d.b.twoCalled) })
		out[0] = proto.Z("disk on fire (#4.3.0)")
		for i := 1; i < len(out); i++ {
			out[i] = proto.D("no such mailbox (#5.1.1)")
		}
		return out
	}
	return fillReplies(out, proto.K("ok "+name))
}

func fillReplies(out []proto.Reply, r proto.Reply) []proto.Reply {
	for i := range out {
		out[i] = r
	}
	return out
}

// Packages are committed in parallel, replies still come in package
// order: the first package's commit finishes only after the second's has
// begun, and the second's failure is its own (Z and D for its two
// recipients); the packages around it get their K.
func TestServerParallelCommitsReplyInOrder(t *testing.T) {
	b := &orderBackend{twoCalled: make(chan struct{})}
	addr, out := serverStart(t, &qmtp.Server{Backend: b, Timeout: 30 * time.Second})
	var send []byte
	send = append(send, serverPkg(lf("one\n"), "a@b", "r1@x", "r2@x")...)
	send = append(send, serverPkg(lf("two\n"), "a@b", "r1@x", "r2@x")...)
	send = append(send, serverPkg(lf("three\n"), "a@b", "r1@x")...)
	got := serverConverse(t, addr, send)
	equalReplies(t, got, []string{
		"Kok one", "Kok one",
		"Zdisk on fire (#4.3.0)", "Dno such mailbox (#5.1.1)",
		"Kok three",
	})
	if o := serverWaitOutcome(t, out); o.err != nil || o.res.Packages != 3 || o.res.Accepted != 3 || o.res.Deferred != 1 || o.res.Rejected != 1 {
		t.Fatalf("outcome %+v %v", o.res, o.err)
	}
}

// gateBackend holds every Commit until the test opens the gate, and
// counts the Commits waiting.
type gateBackend struct {
	serverBackend
	gate    chan struct{}
	waiting chan struct{} // one value per Commit that reached the gate
}

type gateDelivery struct {
	proto.Delivery
	b *gateBackend
}

func (b *gateBackend) Begin(ctx context.Context, peer proto.Peer, size int64) (proto.Delivery, error) {
	d, err := b.serverBackend.Begin(ctx, peer, size)
	return &gateDelivery{d, b}, err
}

func (d *gateDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	d.b.waiting <- struct{}{}
	<-d.b.gate
	return d.Delivery.Commit(ctx, env)
}

// A session has at most DefaultParallel packages in flight: with 24 small
// packages more pipelined and every commit held, DefaultParallel commits
// wait and no further package is begun until they are let go; then all
// get their K, in order.
func TestServerBoundsPackagesInFlight(t *testing.T) {
	const packages, bound = qmtp.DefaultParallel + 24, qmtp.DefaultParallel
	b := &gateBackend{gate: make(chan struct{}), waiting: make(chan struct{}, packages)}
	addr, out := serverStart(t, &qmtp.Server{Backend: b, Timeout: 30 * time.Second})
	var send []byte
	var want []string
	for i := 1; i <= packages; i++ {
		send = append(send, serverPkg(lf(fmt.Sprintf("m%d\n", i)), "a@b", "r@x")...)
		want = append(want, fmt.Sprintf("Kok %d", i))
	}
	var open sync.Once
	openGate := func() { open.Do(func() { close(b.gate) }) }
	t.Cleanup(openGate) // before the server's clean-up, which waits for its sessions
	replies := make(chan []string, 1)
	go func() { replies <- serverConverse(t, addr, send) }()
	for i := range bound {
		select {
		case <-b.waiting:
		case <-time.After(20 * time.Second): // a guard, not a synchronisation
			t.Fatalf("only %d commits under way at once, want %d", i, bound)
		}
	}
	// bound commits wait at the gate: the session must not have begun
	// another package. (It could only have done so before the last Commit
	// was called; if it did, Begin shows it now.)
	if begun, _, _ := b.counts(); begun != bound {
		t.Fatalf("%d packages begun with %d commits held, want %d", begun, bound, bound)
	}
	openGate()
	equalReplies(t, <-replies, want)
	if o := serverWaitOutcome(t, out); o.err != nil || o.res.Packages != packages {
		t.Fatalf("outcome %+v %v", o.res, o.err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.maxCommit > bound {
		t.Fatalf("%d commits ran at once, want at most %d", b.maxCommit, bound)
	}
}

// A server told to stop ends a session at its next package boundary, and
// still answers every package read before it: here three packages whose
// commits are all under way when the stop comes.
func TestServerStopAnswersPackagesInFlight(t *testing.T) {
	const packages = 3
	b := &gateBackend{gate: make(chan struct{}), waiting: make(chan struct{}, packages)}
	stopping := make(chan struct{})
	addr, out := serverStart(t, &qmtp.Server{Backend: b, Timeout: 30 * time.Second, Stopping: stopping})
	var open sync.Once
	openGate := func() { open.Do(func() { close(b.gate) }) }
	t.Cleanup(openGate)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var send []byte
	for i := 1; i <= packages; i++ {
		send = append(send, serverPkg(lf(fmt.Sprintf("m%d\n", i)), "a@b", "r@x")...)
	}
	if _, err := c.Write(send); err != nil { // and the connection stays open
		t.Fatal(err)
	}
	for i := range packages {
		select {
		case <-b.waiting:
		case <-time.After(20 * time.Second): // a guard, not a synchronisation
			t.Fatalf("only %d commits under way, want %d", i, packages)
		}
	}
	close(stopping)
	openGate()
	equalReplies(t, serverReadReplies(t, c), []string{"Kok 1", "Kok 2", "Kok 3"})
	if o := serverWaitOutcome(t, out); o.err != nil || o.res.Packages != packages || o.res.Accepted != packages {
		t.Fatalf("outcome %+v %v", o.res, o.err)
	}
	b.check(t)
}

// Parallel 1 commits each package before the next is read, as
// qmail-qmtpd does: while the first commit is held, no second package
// is begun.
func TestServerParallelOne(t *testing.T) {
	const packages = 5
	b := &gateBackend{gate: make(chan struct{}), waiting: make(chan struct{}, packages)}
	addr, out := serverStart(t, &qmtp.Server{Backend: b, Timeout: 30 * time.Second, Parallel: 1})
	var open sync.Once
	openGate := func() { open.Do(func() { close(b.gate) }) }
	t.Cleanup(openGate)
	var send []byte
	var want []string
	for i := 1; i <= packages; i++ {
		send = append(send, serverPkg(lf(fmt.Sprintf("m%d\n", i)), "a@b", "r@x")...)
		want = append(want, fmt.Sprintf("Kok %d", i))
	}
	replies := make(chan []string, 1)
	go func() { replies <- serverConverse(t, addr, send) }()
	select {
	case <-b.waiting:
	case <-time.After(20 * time.Second): // a guard, not a synchronisation
		t.Fatal("no commit")
	}
	if begun, _, _ := b.counts(); begun != 1 {
		t.Fatalf("%d packages begun while the first commit is held, want 1", begun)
	}
	openGate()
	equalReplies(t, <-replies, want)
	if o := serverWaitOutcome(t, out); o.err != nil || o.res.Packages != packages {
		t.Fatalf("outcome %+v %v", o.res, o.err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.maxCommit != 1 {
		t.Fatalf("%d commits ran at once, want 1", b.maxCommit)
	}
}
