package qmtp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"qbox/proto"
)

// hostileServer accepts connections on 127.0.0.1 and runs script on each.
// When script returns, the connection stays open, unread, until the test
// ends: a server that has stopped reading.
func hostileServer(t *testing.T, script func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				script(c)
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

// bigPackage is a package whose message is size bytes of 'x', generated
// as it is read: bigger than every socket buffer between a client and a
// server that stops reading, so the client cannot finish writing it.
func bigPackage(size int64, rcpts ...string) proto.Message {
	return proto.Message{
		Sender:     "s@x",
		Recipients: rcpts,
		Size:       size,
		Open: func() (io.ReadCloser, error) {
			return io.NopCloser(io.LimitReader(xReader{}, size)), nil
		},
	}
}

type xReader struct{}

func (xReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

const hugeMessage = 32 << 20 // far beyond loopback's socket buffers (a few MiB)

// A server that starts its reply after reading the first bytes of a huge
// package, then stops reading, cannot have received the package: its
// reply is a protocol violation, and the recipient gets a Z made up here,
// at once, not after a write timeout.
func TestClientReplyStartedBeforePackageSent(t *testing.T) {
	addr := hostileServer(t, func(c net.Conn) {
		io.CopyN(io.Discard, c, 100)
		c.Write([]byte("2:K")) // the rest of "2:Ky," never comes
	})
	var results []proto.Result
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := (&Client{WriteTimeout: 20 * time.Second}).Deliver(ctx, []string{addr}, []proto.Message{bigPackage(hugeMessage, "r@x")}, collect(&results))
	if !errors.Is(err, proto.ErrRemoteViolation) {
		t.Fatalf("err %v, want a protocol violation", err)
	}
	if len(results) != 1 || results[0].FromServer || results[0].Reply.Status != proto.Temporary ||
		!strings.Contains(results[0].Reply.Text, "before the package was sent in full") {
		t.Fatalf("results %+v, want one Z naming the early reply", results)
	}
}

// A complete K before the package was sent is no K either (the server
// here stops reading after it, so the client cannot finish by luck).
func TestClientCompleteReplyBeforePackageSent(t *testing.T) {
	addr := hostileServer(t, func(c net.Conn) {
		io.CopyN(io.Discard, c, 100)
		c.Write([]byte("2:Ky,"))
	})
	var results []proto.Result
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := (&Client{}).Deliver(ctx, []string{addr}, []proto.Message{bigPackage(hugeMessage, "r@x")}, collect(&results))
	if !errors.Is(err, proto.ErrRemoteViolation) {
		t.Fatalf("err %v, want a protocol violation", err)
	}
	if len(results) != 1 || results[0].FromServer || results[0].Reply.Status != proto.Temporary {
		t.Fatalf("results %+v", results)
	}
}

// More replies than recipients: the one extra reply arrives with the last
// true one (one write, so one read on loopback). The K for the recipient
// sent stands — its package was sent in full and answered — but the
// session reports the violation.
func TestClientMoreRepliesThanRecipients(t *testing.T) {
	pkgs := []proto.Message{bytesPackage("s@x", []byte("a\n"), "r@x")}
	wire := WireSize(&pkgs[0])
	addr := hostileServer(t, func(c net.Conn) {
		io.CopyN(io.Discard, c, wire)
		c.Write([]byte("3:Kok,3:Kok,"))
	})
	var results []proto.Result
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := (&Client{}).Deliver(ctx, []string{addr}, pkgs, collect(&results))
	if !errors.Is(err, proto.ErrRemoteViolation) || !strings.Contains(err.Error(), "more replies than recipients") {
		t.Fatalf("err %v, want a protocol violation for the extra reply", err)
	}
	if len(results) != 1 || !results[0].FromServer || results[0].Reply.Status != proto.OK {
		t.Fatalf("results %+v", results)
	}
}

// An extra reply while the next package is still being written would be
// taken for that package's: it is refused, and only the package sent in
// full keeps its K.
func TestClientExtraReplyForPackageNotSent(t *testing.T) {
	pkgs := []proto.Message{
		bytesPackage("s@x", []byte("a\n"), "r1@x"),
		bigPackage(hugeMessage, "r2@x"),
	}
	first := WireSize(&pkgs[0])
	addr := hostileServer(t, func(c net.Conn) {
		io.CopyN(io.Discard, c, first)
		c.Write([]byte("3:Kok,3:Kok,")) // and stops reading
	})
	var results []proto.Result
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := (&Client{}).Deliver(ctx, []string{addr}, pkgs, collect(&results))
	if !errors.Is(err, proto.ErrRemoteViolation) {
		t.Fatalf("err %v, want a protocol violation", err)
	}
	checkOrder(t, pkgs, results)
	if !results[0].FromServer || results[0].Reply.Status != proto.OK {
		t.Errorf("package sent in full: %+v, want the server's K", results[0])
	}
	if results[1].FromServer || results[1].Reply.Status != proto.Temporary {
		t.Errorf("package not sent in full: %+v, want a Z of our own", results[1])
	}
}

// A server that trickles its reply one byte at a time never restarts the
// read timeout: the client gives up within it although bytes keep coming
// (the trickle would take 10 s to finish the reply).
func TestClientTricklingReplyTimesOut(t *testing.T) {
	pkgs := []proto.Message{bytesPackage("s@x", []byte("a\n"), "r@x")}
	wire := WireSize(&pkgs[0])
	stopTrickle := make(chan struct{})
	defer close(stopTrickle)
	addr := hostileServer(t, func(c net.Conn) {
		io.CopyN(io.Discard, c, wire)
		reply := append([]byte("500:K"), bytes.Repeat([]byte("y"), 499)...)
		reply = append(reply, ',')
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for _, b := range reply {
			select {
			case <-tick.C:
			case <-stopTrickle:
				return
			}
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
		}
	})
	var results []proto.Result
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a guard, not a measure
	defer cancel()
	_, err := (&Client{ReadTimeout: time.Second}).Deliver(ctx, []string{addr}, pkgs, collect(&results))
	var te *clientReadTimeout
	if !errors.As(err, &te) {
		t.Fatalf("err %v, want the read timeout", err)
	}
	if len(results) != 1 || results[0].FromServer || results[0].Reply.Status != proto.Temporary {
		t.Fatalf("results %+v", results)
	}
}

// Asked to stop starting packages while the second of three is being
// started, the client finishes that one, reads its reply, never starts
// the third, and says so.
func TestClientStopStartingFinishesPackageUnderWay(t *testing.T) {
	addr, store := startStoreServer(t, nil)
	stop := make(chan struct{})
	pkgs := []proto.Message{
		bytesPackage("s@x", []byte("one\n"), "r1@x"),
		bytesPackage("s@x", []byte("two\n"), "r2@x"),
		bytesPackage("s@x", []byte("three\n"), "r3@x"),
	}
	open := pkgs[1].Open
	pkgs[1].Open = func() (io.ReadCloser, error) {
		close(stop) // the signal arrives as the second package starts
		return open()
	}
	ctx := proto.WithStopStarting(context.Background(), stop)
	var results []proto.Result
	_, err := (&Client{}).Deliver(ctx, []string{addr}, pkgs, collect(&results))
	if !errors.Is(err, proto.ErrInterrupted) {
		t.Fatalf("err %v, want ErrInterrupted", err)
	}
	checkOrder(t, pkgs, results)
	for i, want := range []bool{true, true, false} {
		r := results[i]
		if r.FromServer != want || (want && r.Reply.Status != proto.OK) {
			t.Errorf("package %d: %+v", i, r)
		}
	}
	if !strings.Contains(results[2].Reply.Text, "not sent") || results[2].Reply.Status != proto.Temporary {
		t.Errorf("package never started: %+v, want a Z saying it was not sent", results[2])
	}
	var got []string
	for _, m := range readStore(t, store) {
		got = append(got, m.rcpt)
	}
	if strings.Join(got, " ") != "r1@x r2@x" && strings.Join(got, " ") != "r2@x r1@x" {
		t.Errorf("stored for %v, want r1@x and r2@x only", got)
	}
}
