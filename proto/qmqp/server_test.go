package qmqp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/server"
)

// serverBackend is the test's stand-in for the store: it records what
// reaches it and checks the Delivery contract (Commit or Abort exactly
// once, no Write after either).
type serverBackend struct {
	mu        sync.Mutex
	begun     int
	aborted   int
	committed []serverMessage
	misuse    []string
	beginErr  error
	// reply, if set, answers Commit; default K for every recipient.
	reply func(env proto.Envelope) []proto.Reply
	// wrote, if set, is told how many bytes of the body a delivery holds
	// after each Write: an event a test can wait on.
	wrote func(total int)
}

type serverMessage struct {
	Peer proto.Peer
	Size int64
	Body []byte
	Env  proto.Envelope
}

type serverDelivery struct {
	b    *serverBackend
	peer proto.Peer
	size int64
	body bytes.Buffer
	done bool
}

func (b *serverBackend) Begin(ctx context.Context, peer proto.Peer, size int64) (proto.Delivery, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.beginErr != nil {
		return nil, b.beginErr
	}
	b.begun++
	return &serverDelivery{b: b, peer: peer, size: size}, nil
}

func (d *serverDelivery) Write(p []byte) (int, error) {
	if d.done {
		d.b.note("Write after Commit/Abort")
	}
	n, err := d.body.Write(p)
	if d.b.wrote != nil {
		d.b.wrote(d.body.Len())
	}
	return n, err
}

func (d *serverDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if d.done {
		d.b.misuse = append(d.b.misuse, "Commit after Commit/Abort")
	}
	d.done = true
	if d.b.reply != nil {
		return d.b.reply(env)
	}
	d.b.committed = append(d.b.committed, serverMessage{d.peer, d.size, d.body.Bytes(), env})
	out := make([]proto.Reply, len(env.Recipients))
	for i := range out {
		out[i] = proto.K("ok " + strconv.Itoa(len(d.b.committed)))
	}
	return out
}

func (d *serverDelivery) Abort() {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if d.done {
		d.b.misuse = append(d.b.misuse, "Abort after Commit/Abort")
	}
	d.done = true
	d.b.aborted++
}

func (b *serverBackend) note(s string) {
	b.mu.Lock()
	b.misuse = append(b.misuse, s)
	b.mu.Unlock()
}

// counts returns begun, aborted, committed.
func (b *serverBackend) counts() (int, int, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.begun, b.aborted, len(b.committed)
}

type serverOutcome struct {
	res qmqp.Result
	err error
}

// serverStart runs srv on 127.0.0.1 and returns its address and a channel
// with every session's outcome.
func serverStart(t *testing.T, srv *qmqp.Server) (string, <-chan serverOutcome) {
	t.Helper()
	out := make(chan serverOutcome, 10000)
	return serverListen(t, srv, out), out
}

func serverListen(t testing.TB, srv *qmqp.Server, out chan<- serverOutcome) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				res, err := srv.ServeConn(ctx, c, proto.Peer{RemoteIP: ip, LocalHost: "test.example"})
				if out != nil {
					out <- serverOutcome{res, err}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func serverWaitOutcome(t *testing.T, ch <-chan serverOutcome) serverOutcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(20 * time.Second):
		t.Fatal("server session did not end")
		return serverOutcome{}
	}
}

// pkg encodes a QMQP package.
func serverPkg(msg, sender string, rcpts ...string) []byte {
	var inner []byte
	inner = netstring.AppendString(inner, msg)
	inner = netstring.AppendString(inner, sender)
	for _, r := range rcpts {
		inner = netstring.AppendString(inner, r)
	}
	return netstring.Append(nil, inner)
}

// converse sends raw bytes, half-closes, and returns everything the
// server wrote before closing.
func serverConverse(t *testing.T, addr string, send []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		c.Write(send)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading reply: %v", err)
	}
	return got
}

func serverWire(s string) []byte { return netstring.AppendString(nil, s) }

func newServerForTest(b *serverBackend) *qmqp.Server {
	return &qmqp.Server{Backend: b, Timeout: 5 * time.Second}
}

func TestServerAcceptsPackage(t *testing.T) {
	b := &serverBackend{}
	addr, out := serverStart(t, newServerForTest(b))
	msg := "Subject: hi\n\nbody with\x00 NUL and 8-bit \xff\n"
	got := serverConverse(t, addr, serverPkg(msg, "alice@example.test", "bob@example.test", "carol@example.test", "bob@example.test"))
	if !bytes.Equal(got, serverWire("Kok 1")) {
		t.Fatalf("reply %q, want %q", got, serverWire("Kok 1"))
	}
	o := serverWaitOutcome(t, out)
	if o.err != nil || !o.res.Replied || o.res.Recipients != 3 || o.res.Sender != "alice@example.test" || o.res.Size != int64(len(msg)) {
		t.Fatalf("outcome %+v, %v", o.res, o.err)
	}
	if len(b.committed) != 1 {
		t.Fatalf("%d messages committed, want 1", len(b.committed))
	}
	m := b.committed[0]
	if string(m.Body) != msg || m.Size != int64(len(msg)) {
		t.Errorf("stored %q (size %d), want %q", m.Body, m.Size, msg)
	}
	if m.Env.Sender != "alice@example.test" || strings.Join(m.Env.Recipients, ",") != "bob@example.test,carol@example.test,bob@example.test" {
		t.Errorf("envelope %+v", m.Env)
	}
	if m.Peer.Protocol != "QMQP" || m.Peer.RemoteIP != "127.0.0.1" || m.Peer.Time.IsZero() {
		t.Errorf("peer %+v", m.Peer)
	}
	if len(b.misuse) > 0 {
		t.Errorf("delivery misuse: %v", b.misuse)
	}
}

// The client this module ships talks to the server.
func TestServerWithClient(t *testing.T) {
	b := &serverBackend{}
	addr, _ := serverStart(t, newServerForTest(b))
	c := &qmqp.Client{Servers: []string{addr}}
	msg := strings.Repeat("line of text\n", 20000)
	r, err := c.Send(context.Background(), proto.Envelope{Sender: "", Recipients: []string{"x@example.test"}}, strings.NewReader(msg), int64(len(msg)))
	if err != nil || r.Status != proto.OK {
		t.Fatalf("Send: %v %v", r, err)
	}
	if len(b.committed) != 1 || string(b.committed[0].Body) != msg || b.committed[0].Env.Sender != "" {
		t.Fatalf("committed %d messages, body intact %v", len(b.committed), len(b.committed) == 1 && string(b.committed[0].Body) == msg)
	}
}

// Addresses of exactly MaxAddress bytes are accepted, one more is not.
func TestServerAddressLimitBoundary(t *testing.T) {
	b := &serverBackend{}
	addr, _ := serverStart(t, newServerForTest(b))
	long := strings.Repeat("a", server.DefaultMaxAddress-5) + "@x.yz"
	got := serverConverse(t, addr, serverPkg("m\n", long, long))
	if !bytes.Equal(got, serverWire("Kok 1")) {
		t.Fatalf("%d-byte addresses: reply %q", len(long), got)
	}
	got = serverConverse(t, addr, serverPkg("m\n", long, long+"z"))
	if !bytes.Equal(got, serverWire(qmqp.ReplyBadAddress.String())) {
		t.Fatalf("%d-byte recipient: reply %q", len(long)+1, got)
	}
}

// Each refused package gets exactly one D or Z reply after its final byte,
// and nothing is committed.
func TestServerRefusals(t *testing.T) {
	long := strings.Repeat("a", 995) + "@x.yz" // 1000 bytes: accepted
	tooLong := long + "z"                      // 1001
	manyRcpts := make([]string, 6)
	for i := range manyRcpts {
		manyRcpts[i] = fmt.Sprintf("r%d@example.test", i)
	}
	cases := []struct {
		name     string
		send     []byte
		beginErr error
		reply    func(proto.Envelope) []proto.Reply
		want     proto.Reply
		begun    int // Begin calls expected (each must end in Abort)
	}{
		{name: "zero recipients", send: serverPkg("m\n", "a@b"), want: qmqp.ReplyNoRecipients, begun: 1},
		{name: "oversize", send: serverPkg(strings.Repeat("x", 1001), "a@b", "c@d"), want: qmqp.ReplyTooBig},
		{name: "long sender", send: serverPkg("m\n", tooLong, "c@d"), want: qmqp.ReplyBadAddress, begun: 1},
		{name: "long recipient", send: serverPkg("m\n", "a@b", "c@d", tooLong), want: qmqp.ReplyBadAddress, begun: 1},
		{name: "NUL in sender", send: serverPkg("m\n", "a\x00@b", "c@d"), want: qmqp.ReplyBadAddress, begun: 1},
		{name: "NUL in recipient", send: serverPkg("m\n", "a@b", "c\x00@d"), want: qmqp.ReplyBadAddress, begun: 1},
		{name: "LF in sender", send: serverPkg("m\n", "root@x\nX: y", "c@d"), want: qmqp.ReplyBadAddress, begun: 1},
		{name: "LF in recipient", send: serverPkg("m\n", "a@b", "c@d", "root@x\nX: y"), want: qmqp.ReplyBadAddress, begun: 1},
		{name: "CR in recipient", send: serverPkg("m\n", "a@b", "a\rb@c"), want: qmqp.ReplyBadAddress, begun: 1},
		{name: "empty recipient", send: serverPkg("m\n", "a@b", "c@d", ""), want: qmqp.ReplyBadAddress, begun: 1},
		{name: "only an empty recipient", send: serverPkg("m\n", "a@b", ""), want: qmqp.ReplyBadAddress, begun: 1},
		{name: "too many recipients", send: serverPkg("m\n", "a@b", manyRcpts...), want: qmqp.ReplyTooMany, begun: 1},
		{name: "backend refuses", send: serverPkg("m\n", "a@b", "c@d"), beginErr: errors.New("disk on fire"), want: qmqp.ReplyStoreFailed},
		{name: "mixed replies give first D", send: serverPkg("m\n", "a@b", "c@d", "e@f", "g@h", "i@j"),
			reply: func(env proto.Envelope) []proto.Reply {
				return []proto.Reply{proto.K("ok"), proto.Z("later"), proto.D("no such user (#5.1.1)"), proto.D("other")}
			}, want: proto.D("no such user (#5.1.1)"), begun: 1},
		{name: "K and Z give Z", send: serverPkg("m\n", "a@b", "c@d", "e@f"),
			reply: func(env proto.Envelope) []proto.Reply {
				return []proto.Reply{proto.K("ok"), proto.Z("disk full (#4.3.0)")}
			},
			want: proto.Z("disk full (#4.3.0)"), begun: 1},
		{name: "backend reply count wrong", send: serverPkg("m\n", "a@b", "c@d", "e@f"),
			reply: func(env proto.Envelope) []proto.Reply { return []proto.Reply{proto.K("ok")} },
			want:  proto.Z("sorry, internal error: 1 replies for 2 recipients (#4.3.0)"), begun: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &serverBackend{beginErr: tc.beginErr, reply: tc.reply}
			srv := newServerForTest(b)
			srv.Limits = server.Limits{MaxMessageSize: 1000, MaxRecipients: 5}
			addr, out := serverStart(t, srv)
			got := serverConverse(t, addr, tc.send)
			want := tc.want
			if !bytes.Equal(got, serverWire(want.String())) {
				t.Fatalf("reply %q, want %q", got, serverWire(want.String()))
			}
			o := serverWaitOutcome(t, out)
			if o.err != nil || !o.res.Replied {
				t.Errorf("outcome %+v, %v", o.res, o.err)
			}
			begun, aborted, committed := b.counts()
			if tc.reply == nil && committed != 0 {
				t.Errorf("%d messages committed", committed)
			}
			if begun != tc.begun || (tc.reply == nil && aborted != begun) {
				t.Errorf("Begin called %d times (want %d), Abort %d times", begun, tc.begun, aborted)
			}
			if len(b.misuse) > 0 {
				t.Errorf("delivery misuse: %v", b.misuse)
			}
		})
	}
}

// A declared size far beyond the limit is refused at once, without
// waiting for (gigabytes of) body.
func TestServerRefusesHugeDeclaredSizeAtOnce(t *testing.T) {
	for _, head := range []string{
		"10000000000:",                 // 10 GB outer netstring
		"9000000:8999000:",             // outer within bounds, message far over
		strings.Repeat("9", 100) + ":", // endless digits
	} {
		b := &serverBackend{}
		srv := newServerForTest(b)
		srv.Limits = server.Limits{MaxMessageSize: 1000}
		addr, out := serverStart(t, srv)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte(head)) // and nothing more: the client keeps the connection open
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, serverWire(qmqp.ReplyTooBig.String())) {
			t.Errorf("%.20q: reply %q, %v; want %q", head, got, err, serverWire(qmqp.ReplyTooBig.String()))
		}
		o := serverWaitOutcome(t, out)
		if o.err != nil || !o.res.Replied {
			t.Errorf("%.20q: outcome %+v, %v", head, o.res, o.err)
		}
		if begun, _, _ := b.counts(); begun != 0 {
			t.Errorf("%.20q: Begin called", head)
		}
	}
}

// Broken packages get no reply at all; anything begun is aborted.
func TestServerProtocolErrors(t *testing.T) {
	good := serverPkg("m\n", "a@b", "c@d")
	inner := good[bytes.IndexByte(good, ':')+1 : len(good)-1]
	cases := []struct {
		name  string
		send  []byte
		begun int
	}{
		{"outer length short", append(append([]byte(strconv.Itoa(len(inner)-1)+":"), inner...), ','), 1},
		{"outer length long", append(append([]byte(strconv.Itoa(len(inner)+1)+":"), inner...), ','), 1},
		{"missing outer comma", append(append([]byte(strconv.Itoa(len(inner))+":"), inner...), ';'), 1},
		{"missing inner comma", []byte("13:2:m\n;0:,3:c@d,,"), 1},
		{"leading zero", []byte("013:2:m\n,0:,3:c@d,,"), 0},
		{"non-digit", []byte("1x:"), 0},
		{"empty length", []byte(":,"), 0},
		{"empty package", []byte("0:,"), 0},
		{"message only", []byte("5:2:m\n,,"), 1},
		{"client gone mid-message", []byte("100:90:half a message"), 1},
		{"client gone before recipients end", good[:len(good)-3], 1},
		{"client gone before final comma", good[:len(good)-1], 1},
		{"nothing sent", nil, 0},
		// Items that do not fit in the package: the netstring reader
		// refuses each before its body is read (ErrOverrun, a grammar
		// error), the check the server once repeated (fits).
		{"message overruns package", []byte("5:9:abcdefghi,,"), 0},
		{"sender overruns package", []byte("10:2:m\n,9:abc"), 1},
		{"recipient overruns package", []byte("13:2:m\n,0:,9:c@d"), 1},
		{"recipient's comma beyond package", []byte("12:2:m\n,0:,2:ab,,"), 1},
		{"second package on the connection", append(append([]byte{}, good...), good...), 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &serverBackend{}
			addr, out := serverStart(t, newServerForTest(b))
			got := serverConverse(t, addr, tc.send)
			o := serverWaitOutcome(t, out)
			begun, aborted, committed := b.counts()
			if tc.name == "second package on the connection" {
				// Exactly one reply; the second package is never read.
				if !bytes.Equal(got, serverWire("Kok 1")) || committed != 1 || o.err != nil {
					t.Fatalf("reply %q, %d committed, err %v", got, committed, o.err)
				}
				return
			}
			if len(got) != 0 {
				t.Errorf("got reply %q, want none", got)
			}
			if o.err == nil || o.res.Replied {
				t.Errorf("outcome %+v, %v: want an error and no reply", o.res, o.err)
			}
			if strings.Contains(tc.name, "package") && !errors.Is(o.err, qmqp.ErrProtocol) {
				t.Errorf("error %v does not wrap ErrProtocol", o.err)
			}
			if begun != tc.begun || aborted != begun || committed != 0 {
				t.Errorf("Begin %d (want %d), Abort %d, committed %d", begun, tc.begun, aborted, committed)
			}
			if len(b.misuse) > 0 {
				t.Errorf("delivery misuse: %v", b.misuse)
			}
			t.Logf("error: %v", o.err)
		})
	}
}

func TestServerProtocolErrorIsTyped(t *testing.T) {
	b := &serverBackend{}
	addr, out := serverStart(t, newServerForTest(b))
	serverConverse(t, addr, []byte("5:2:m\n;0:,"))
	if o := serverWaitOutcome(t, out); !errors.Is(o.err, qmqp.ErrProtocol) {
		t.Fatalf("error %v does not wrap ErrProtocol", o.err)
	}
}

// The reply never comes before the final comma: everything but it is
// sent, no reply arrives, then the comma brings K.
func TestServerNoReplyBeforeFinalComma(t *testing.T) {
	b := &serverBackend{}
	addr, out := serverStart(t, newServerForTest(b))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := serverPkg("Subject: wait\n\nfor it\n", "a@b", "c@d")
	if _, err := c.Write(p[:len(p)-1]); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var one [1]byte
	if n, err := c.Read(one[:]); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("before the final comma the server sent %q (%v)", one[:n], err)
	}
	if _, _, committed := serverCounts(b); committed != 0 {
		t.Fatal("committed before the final comma")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(p[len(p)-1:]); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, serverWire("Kok 1")) {
		t.Fatalf("reply %q, %v", got, err)
	}
	serverWaitOutcome(t, out)
}

func serverCounts(b *serverBackend) (int, int, int) { return b.counts() }

// A client that stops sending is cut off after the idle timeout, and a
// session is cut off at its limit even while bytes trickle in.
func TestServerTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		srv     *qmqp.Server
		drip    time.Duration
		wantErr error
	}{
		{"idle", &qmqp.Server{Timeout: 300 * time.Millisecond}, 0, server.ErrIdleTimeout},
		{"session", &qmqp.Server{Timeout: 5 * time.Second, SessionLimit: 500 * time.Millisecond}, 50 * time.Millisecond, server.ErrSessionLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &serverBackend{}
			srv := tc.srv
			srv.Backend = b
			addr, out := serverStart(t, srv)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("1000:990:"))
			done := make(chan struct{})
			if tc.drip > 0 {
				go func() {
					for i := 0; i < 200; i++ {
						select {
						case <-done:
							return
						case <-time.After(tc.drip):
						}
						if _, err := c.Write([]byte("x")); err != nil {
							return
						}
					}
				}()
			}
			o := serverWaitOutcome(t, out)
			close(done)
			if !errors.Is(o.err, tc.wantErr) || o.res.Replied {
				t.Fatalf("outcome %+v, %v; want %v", o.res, o.err, tc.wantErr)
			}
			if begun, aborted, committed := b.counts(); begun != 1 || aborted != 1 || committed != 0 {
				t.Fatalf("Begin %d, Abort %d, committed %d", begun, aborted, committed)
			}
		})
	}
}

// Cancelling the server's context ends a session blocked in a read: the
// cancel comes once the delivery holds the three body bytes sent, when the
// server can only be reading the 47 that never come.
func TestServerShutdown(t *testing.T) {
	b := &serverBackend{}
	holds := make(chan struct{})
	var once sync.Once
	b.wrote = func(total int) {
		if total == 3 {
			once.Do(func() { close(holds) })
		}
	}
	srv := newServerForTest(b)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close() // held open until the test ends
	if _, err := client.Write([]byte("100:50:abc")); err != nil {
		t.Fatal(err)
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-holds:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err = srv.ServeConn(ctx, c, proto.Peer{})
	if !errors.Is(err, server.ErrShutdown) {
		t.Fatalf("error %v, want ErrShutdown", err)
	}
	if begun, aborted, _ := b.counts(); begun != 1 || aborted != 1 {
		t.Fatalf("Begin %d, Abort %d", begun, aborted)
	}
}

// Envelopes bounds what all sessions hold: a package whose envelope does
// not fit gets Z (the client comes again) and nothing is committed; what
// a session took is given back when it ends, so the next one fits.
func TestServerEnvelopeBudget(t *testing.T) {
	b := &serverBackend{}
	srv := newServerForTest(b)
	budget := server.NewBudget(3 * server.AddressCost(len("r0@example.test")))
	srv.Envelopes = budget
	addr, out := serverStart(t, srv)
	many := []string{"r0@example.test", "r1@example.test", "r2@example.test", "r3@example.test"}
	if got := serverConverse(t, addr, serverPkg("m\n", "a@b", many...)); !bytes.Equal(got, serverWire(qmqp.ReplyBusy.String())) {
		t.Fatalf("4 recipients over a budget of 3: reply %q, want %q", got, qmqp.ReplyBusy.String())
	}
	serverWaitOutcome(t, out)
	for range 2 {
		if got := serverConverse(t, addr, serverPkg("m\n", "a@b", many[:3]...)); !bytes.Contains(got, []byte(":K")) {
			t.Fatalf("3 recipients: reply %q, want K", got)
		}
		serverWaitOutcome(t, out)
	}
	if _, _, committed := b.counts(); committed != 2 {
		t.Fatalf("%d messages committed, want 2", committed)
	}
	if !budget.Take(3 * server.AddressCost(len("r0@example.test"))) {
		t.Fatal("the sessions did not give back the whole budget")
	}
}
