package qmtp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/testkit/linksim"
	"qbox/proto/testkit/servetest"
	"qbox/proto/testkit/testpeer"
)

// memStore is a real in-memory Backend: each committed message is kept
// once per recipient, as a store keeps it, and K is said only once it
// is kept. (Not proto/store/maildir: a protocol package does not depend
// on the stores; what the client sends is the subject here, not how a
// store files it.)
type memStore struct {
	mu   sync.Mutex
	msgs []storedMessage
}

type memDelivery struct {
	s   *memStore
	buf bytes.Buffer
}

func (s *memStore) Begin(ctx context.Context, peer proto.Peer, size int64) (proto.Delivery, error) {
	return &memDelivery{s: s}, nil
}

func (d *memDelivery) Write(p []byte) (int, error) { return d.buf.Write(p) }
func (d *memDelivery) Abort()                      {}
func (d *memDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	replies := make([]proto.Reply, len(env.Recipients))
	for i, r := range env.Recipients {
		d.s.msgs = append(d.s.msgs, storedMessage{env.Sender, r, bytes.Clone(d.buf.Bytes())})
		replies[i] = proto.K("ok")
	}
	return replies
}

// startStoreServer runs this package's Server in-process on 127.0.0.1 with
// an in-memory store and returns its address and the store. tune, if
// set, adjusts each accepted connection (socket buffer sizes).
func startStoreServer(t testing.TB, tune func(*net.TCPConn)) (string, *memStore) {
	t.Helper()
	store := &memStore{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		ln = &tuningListener{ln, tune}
	}
	addr, _ := servetest.Serve(t, &Server{Backend: store, Hostname: "test.local"}, ln)
	return addr, store
}

// tuningListener adjusts each connection it accepts.
type tuningListener struct {
	net.Listener
	tune func(*net.TCPConn)
}

func (l *tuningListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.tune(c.(*net.TCPConn))
	}
	return c, err
}

// bytesPackage returns a package whose message is msg.
func bytesPackage(sender string, msg []byte, rcpts ...string) proto.Message {
	return proto.Message{
		Sender:     sender,
		Recipients: rcpts,
		Size:       int64(len(msg)),
		Open:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil },
	}
}

// storedMessage is one message as the store kept it for one recipient.
type storedMessage struct {
	sender, rcpt string
	body         []byte
}

// readStore returns what the store kept, in the order it was committed.
func readStore(t *testing.T, s *memStore) []storedMessage {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]storedMessage(nil), s.msgs...)
}

func collect(results *[]proto.Result) func(proto.Result) {
	return func(r proto.Result) { *results = append(*results, r) }
}

// checkOrder asserts one result per recipient, in package and recipient
// order.
func checkOrder(t *testing.T, pkgs []proto.Message, results []proto.Result) {
	t.Helper()
	k := 0
	for i := range pkgs {
		for j := range pkgs[i].Recipients {
			if k >= len(results) {
				t.Fatalf("only %d results", len(results))
			}
			if results[k].Message != i || results[k].Recipient != j {
				t.Fatalf("result %d is for package %d recipient %d, want %d/%d", k, results[k].Message, results[k].Recipient, i, j)
			}
			k++
		}
	}
	if k != len(results) {
		t.Fatalf("%d results for %d recipients", len(results), k)
	}
}

func TestClientPipelinesIntoServer(t *testing.T) {
	addr, store := startStoreServer(t, nil)
	rng := rand.New(rand.NewSource(1))
	var pkgs []proto.Message
	want := map[string][]byte{} // rcpt -> body
	senders := map[string]string{}
	for i := 0; i < 40; i++ {
		msg := make([]byte, rng.Intn(5000))
		rng.Read(msg) // every byte value: NUL, CR, 8-bit
		msg = append([]byte(fmt.Sprintf("Subject: %d\n\n", i)), msg...)
		var rcpts []string
		for j := 0; j <= i%3; j++ {
			r := fmt.Sprintf("r%d-%d@example.test", i, j)
			rcpts = append(rcpts, r)
			want[r] = msg
			senders[r] = fmt.Sprintf("s%d@example.test", i)
		}
		sender := fmt.Sprintf("s%d@example.test", i)
		if i == 7 {
			sender = "" // the null sender
			for _, r := range rcpts {
				senders[r] = ""
			}
		}
		pkgs = append(pkgs, bytesPackage(sender, msg, rcpts...))
	}
	var results []proto.Result
	c := &Client{}
	stats, err := c.Deliver(context.Background(), []string{addr}, pkgs, collect(&results))
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, pkgs, results)
	for _, r := range results {
		if r.Reply.Status != proto.OK || !r.FromServer {
			t.Fatalf("package %d: %v (from server %v)", r.Message, r.Reply, r.FromServer)
		}
	}
	var wire int64
	for i := range pkgs {
		wire += WireSize(&pkgs[i])
	}
	if stats.BytesOut != wire || stats.Replies != len(results) {
		t.Errorf("stats %+v, want %d bytes out and %d replies", stats, wire, len(results))
	}
	got := readStore(t, store)
	if len(got) != len(want) {
		t.Fatalf("store holds %d messages, want %d", len(got), len(want))
	}
	for _, m := range got {
		if !bytes.Equal(m.body, want[m.rcpt]) {
			t.Errorf("%s: body differs (%d bytes, want %d)", m.rcpt, len(m.body), len(want[m.rcpt]))
		}
		if m.sender != senders[m.rcpt] {
			t.Errorf("%s: sender %q, want %q", m.rcpt, m.sender, senders[m.rcpt])
		}
	}
}

// With tiny socket buffers on both ends, replies fill the server's send
// path long before the client has written everything: a client that did
// not read while writing would hang here.
func TestClientNoDeadlockOnFullBuffers(t *testing.T) {
	addr, store := startStoreServer(t, func(c *net.TCPConn) {
		c.SetWriteBuffer(8192)
		c.SetReadBuffer(8192)
	})
	// 1200 replies of ~80 bytes: three times what the buffers hold; 120
	// KB of messages, four times what they hold the other way.
	msg := bytes.Repeat([]byte("0123456789abcdef\n"), 240) // ~4 KB
	var pkgs []proto.Message
	for i := 0; i < 30; i++ {
		var rcpts []string
		for j := 0; j < 40; j++ {
			rcpts = append(rcpts, fmt.Sprintf("u%d.%d@example.test", i, j))
		}
		pkgs = append(pkgs, bytesPackage("s@example.test", msg, rcpts...))
	}
	c := &Client{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			conn.(*net.TCPConn).SetReadBuffer(8192)
			conn.(*net.TCPConn).SetWriteBuffer(8192)
		}
		return conn, err
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var results []proto.Result
	if _, err := c.Deliver(ctx, []string{addr}, pkgs, collect(&results)); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, pkgs, results)
	for _, r := range results {
		if r.Reply.Status != proto.OK {
			t.Fatalf("%v", r.Reply)
		}
	}
	if n := len(readStore(t, store)); n != 1200 {
		t.Fatalf("store holds %d messages, want 1200", n)
	}
}

func TestClientConnectionCutAfterReplies(t *testing.T) {
	addr, store := startStoreServer(t, nil)
	proxy, err := linksim.Start(addr, linksim.Link{CutAfterReplies: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	var pkgs []proto.Message
	for i := 0; i < 10; i++ {
		pkgs = append(pkgs, bytesPackage("s@example.test", []byte(fmt.Sprintf("m%d\n", i)), fmt.Sprintf("r%d@example.test", i)))
	}
	var results []proto.Result
	_, err = (&Client{}).Deliver(context.Background(), []string{proxy.Addr}, pkgs, collect(&results))
	if err == nil {
		t.Fatal("a cut session reported success")
	}
	checkOrder(t, pkgs, results)
	for i, r := range results {
		if i < 4 && (r.Reply.Status != proto.OK || !r.FromServer) {
			t.Errorf("result %d: %v from server %v, want the server's K", i, r.Reply, r.FromServer)
		}
		if i >= 4 && (r.Reply.Status != proto.Temporary || r.FromServer) {
			t.Errorf("result %d: %v from server %v, want a local Z", i, r.Reply, r.FromServer)
		}
	}
	// What got K is stored; later packages may be stored too (the
	// replies were lost, not the mail): that is QMTP's one duplicate risk.
	if n := len(readStore(t, store)); n < 4 {
		t.Errorf("store holds %d files, want at least the 4 acknowledged", n)
	}
}

// scriptedServer is a test double for misbehaving servers, which no real
// peer provides: it reads until it has want bytes of client data (or
// immediately, if want < 0), then writes answer and closes.
func scriptedServer(t *testing.T, want int64, answer []byte, hold time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if want >= 0 {
					io.CopyN(io.Discard, c, want)
				}
				c.Write(answer)
				if hold > 0 {
					time.Sleep(hold)
				}
				if want < 0 {
					io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestClientBadReplies(t *testing.T) {
	pkgs := []proto.Message{
		bytesPackage("s@x", []byte("a\n"), "r1@x", "r2@x"),
		bytesPackage("s@x", []byte("b\n"), "r3@x"),
	}
	var wire int64
	for i := range pkgs {
		wire += WireSize(&pkgs[i])
	}
	cases := []struct {
		name      string
		answer    string
		fromSrv   int  // leading results from the server
		violation bool // session error is a protocol violation
	}{
		{"all", "5:Kok 1,5:Kok 2,8:Dno such,", 3, false},
		{"eof after one", "5:Kok 1,", 1, false},
		{"empty reply", "5:Kok 1,0:,", 1, true},
		{"unknown status", "5:Kok 1,3:Xno,", 1, true},
		{"no comma", "5:Kok 1;", 0, true},
		{"leading zero", "05:Kok 1,", 0, true},
		{"huge length", "99999999999999:K", 0, true},
		{"non-digit", "x:K,", 0, true},
		{"cut inside", "5:Kok 1,5:Ko", 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := scriptedServer(t, wire, []byte(tc.answer), 0)
			var results []proto.Result
			_, err := (&Client{}).Deliver(context.Background(), []string{addr}, pkgs, collect(&results))
			checkOrder(t, pkgs, results)
			for i, r := range results {
				if (i < tc.fromSrv) != r.FromServer {
					t.Errorf("result %d: from server %v", i, r.FromServer)
				}
				if !r.FromServer && r.Reply.Status != proto.Temporary {
					t.Errorf("result %d: made-up reply %v, want Z", i, r.Reply)
				}
			}
			if tc.fromSrv == 3 {
				if err != nil {
					t.Fatal(err)
				}
				if results[2].Reply.Status != proto.Permanent || results[2].Reply.Text != "no such" {
					t.Errorf("third reply %v", results[2].Reply)
				}
				return
			}
			if err == nil {
				t.Fatal("no session error")
			}
			if got := errors.Is(err, proto.ErrRemoteViolation); got != tc.violation {
				t.Errorf("error %v: violation %v, want %v", err, got, tc.violation)
			}
		})
	}
}

func TestClientReplyBeforeEndOfPackage(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 8<<20) // more than any socket buffer
	addr := scriptedServer(t, -1, []byte("2:Ky,"), 0)
	var results []proto.Result
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := (&Client{}).Deliver(ctx, []string{addr}, []proto.Message{bytesPackage("s@x", big, "r@x")}, collect(&results))
	if !errors.Is(err, proto.ErrRemoteViolation) {
		t.Fatalf("err %v, want a protocol violation", err)
	}
	if len(results) != 1 || results[0].FromServer || results[0].Reply.Status != proto.Temporary {
		t.Fatalf("results %+v", results)
	}
}

func TestClientReadTimeout(t *testing.T) {
	pkgs := []proto.Message{bytesPackage("s@x", []byte("a\n"), "r@x")}
	addr := scriptedServer(t, WireSize(&pkgs[0]), nil, 10*time.Minute) // reads all, says nothing
	var results []proto.Result
	start := time.Now()
	_, err := (&Client{ReadTimeout: 300 * time.Millisecond}).Deliver(context.Background(), []string{addr}, pkgs, collect(&results))
	if err == nil || !strings.Contains(err.Error(), "no reply") {
		t.Fatalf("err %v, want a reply timeout", err)
	}
	// A guard, not a measure: the server would close only after ten
	// minutes.
	if time.Since(start) > time.Minute {
		t.Errorf("the client waited for the server's close, not its read timeout")
	}
	if len(results) != 1 || results[0].FromServer || results[0].Reply.Status != proto.Temporary {
		t.Fatalf("results %+v", results)
	}
}

func TestClientUnreadableMessageIsLocalZ(t *testing.T) {
	addr, store := startStoreServer(t, nil)
	pkgs := []proto.Message{
		bytesPackage("s@x", []byte("one\n"), "a@example.test"),
		{Sender: "s@x", Recipients: []string{"b@example.test"}, Size: 10, Open: func() (io.ReadCloser, error) {
			return nil, os.ErrNotExist
		}},
		bytesPackage("s@x", []byte("three\n"), "c@example.test"),
	}
	var results []proto.Result
	if _, err := (&Client{}).Deliver(context.Background(), []string{addr}, pkgs, collect(&results)); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, pkgs, results)
	if results[0].Reply.Status != proto.OK || results[2].Reply.Status != proto.OK {
		t.Errorf("results %+v", results)
	}
	if results[1].Reply.Status != proto.Temporary || results[1].FromServer {
		t.Errorf("unreadable message: %+v", results[1])
	}
	if n := len(readStore(t, store)); n != 2 {
		t.Errorf("store holds %d files, want 2", n)
	}
}

func TestClientRefusesZeroRecipients(t *testing.T) {
	_, err := (&Client{}).Send(context.Background(), nil, []proto.Message{bytesPackage("s@x", []byte("a\n"))}, func(proto.Result) {
		t.Error("result for a package never sent")
	})
	if err == nil {
		t.Fatal("a package without recipients was accepted")
	}
}

func TestClientConnectFailure(t *testing.T) {
	closed := testpeer.ClosedAddr(t)
	addr, _ := startStoreServer(t, nil)
	var results []proto.Result
	pkgs := []proto.Message{bytesPackage("s@x", []byte("a\n"), "r@example.test")}
	// Only the first fails: the second address takes the session.
	if _, err := (&Client{}).Deliver(context.Background(), []string{closed, addr}, pkgs, collect(&results)); err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Reply.Status != proto.OK {
		t.Fatalf("%+v", results)
	}
	results = nil
	_, err := (&Client{}).Deliver(context.Background(), []string{closed}, pkgs, collect(&results))
	var ce *proto.ConnectError
	if !errors.As(err, &ce) || len(ce.Tried) != 1 || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err %v, want a ConnectError that unwraps to the refusal", err)
	}
	if len(results) != 0 {
		t.Fatalf("a failed connect delivered results: %+v", results)
	}
}

// FuzzClientReplies feeds arbitrary server output to the client's reply
// reader: whatever arrives, every recipient gets exactly one result, in
// order, server replies only when they parse, and nothing panics.
func FuzzClientReplies(f *testing.F) {
	for _, s := range []string{"5:Kok 1,5:Kok 2,8:Dno such,", "", "0:,", "3:Zx", "1:K,1:Z,1:D,1:K,", "10000000:", "2:K\xff,", "99999999999999999999:"} {
		f.Add([]byte(s))
	}
	pkgs := []proto.Message{
		bytesPackage("s@x", []byte("a\n"), "r1@x", "r2@x"),
		bytesPackage("", []byte("b\n"), "r3@x"),
	}
	var wire int64
	for i := range pkgs {
		wire += WireSize(&pkgs[i])
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		client, server := net.Pipe()
		defer client.Close()
		go func() {
			defer server.Close()
			io.CopyN(io.Discard, server, wire)
			server.Write(answer)
		}()
		var results []proto.Result
		(&Client{ReadTimeout: time.Second}).Send(context.Background(), client, pkgs, collect(&results))
		checkOrder(t, pkgs, results)
		for _, r := range results {
			switch r.Reply.Status {
			case proto.OK, proto.Temporary, proto.Permanent:
			default:
				t.Fatalf("status %q", r.Reply.Status)
			}
			if !r.FromServer && r.Reply.Status != proto.Temporary {
				t.Fatalf("made-up reply %v", r.Reply)
			}
		}
	})
}
