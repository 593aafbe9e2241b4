package qmqp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testkit/testpeer"
)

// clientScripted is a tiny scripted QMQP peer: it reads one package and
// answers with the given bytes (malformed on purpose when a test wants),
// or closes at once when reply is nil.
type clientScripted struct {
	addr  string
	conns atomic.Int32
	got   chan []byte
}

func clientStartScripted(t *testing.T, reply []byte) *clientScripted {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := &clientScripted{addr: l.Addr().String(), got: make(chan []byte, 16)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer c.Close()
				if reply == nil {
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b, err := netstring.NewReader(c).ReadBytes(1 << 20)
				if err != nil {
					return
				}
				s.got <- b
				c.Write(reply)
			}()
		}
	}()
	return s
}

// clientRefused is a loopback address where connecting is refused.
func clientRefused(t *testing.T) string { return testpeer.ClosedAddr(t) }

var clientEnv = proto.Envelope{Sender: "s@example.test", Recipients: []string{"r1@example.test", "r2@example.test"}}

func clientSend(c *qmqp.Client, msg string) (proto.Reply, error) {
	return c.Send(context.Background(), clientEnv, strings.NewReader(msg), int64(len(msg)))
}

func TestClientPackageOnTheWire(t *testing.T) {
	srv := clientStartScripted(t, netstring.AppendString(nil, "Kok"))
	reply, err := clientSend(&qmqp.Client{Servers: []string{srv.addr}}, "Subject: x\n\nhi\n")
	if err != nil || reply.Status != proto.OK || reply.Text != "ok" {
		t.Fatalf("reply %v, err %v", reply, err)
	}
	want := "15:Subject: x\n\nhi\n,14:s@example.test,15:r1@example.test,15:r2@example.test,"
	if got := string(<-srv.got); got != want {
		t.Fatalf("package %q, want %q", got, want)
	}
}

func TestClientFailover(t *testing.T) {
	srv := clientStartScripted(t, netstring.AppendString(nil, "Kok"))
	refused := clientRefused(t)
	reply, err := clientSend(&qmqp.Client{Servers: []string{refused, srv.addr}}, "m\n")
	if err != nil || reply.Status != proto.OK {
		t.Fatalf("reply %v, err %v", reply, err)
	}
	// All refused: a ConnectError naming each, and it says "refused".
	_, err = clientSend(&qmqp.Client{Servers: []string{refused, clientRefused(t)}}, "m\n")
	var ce *proto.ConnectError
	if !errors.As(err, &ce) || len(ce.Tried) != 2 || !ce.Refused() || ce.TimedOut() {
		t.Fatalf("err %v", err)
	}
	// None configured.
	_, err = clientSend(&qmqp.Client{}, "m\n")
	if !errors.As(err, &ce) || len(ce.Tried) != 0 || !errors.Is(err, proto.ErrNoServers) {
		t.Fatalf("no servers: %v", err)
	}
}

func TestClientNoFailoverAfterConnect(t *testing.T) {
	closer := clientStartScripted(t, nil)
	second := clientStartScripted(t, netstring.AppendString(nil, "Kok"))
	_, err := clientSend(&qmqp.Client{Servers: []string{closer.addr, second.addr}}, "m\n")
	var se *qmqp.SessionError
	if !errors.As(err, &se) || se.Server != closer.addr {
		t.Fatalf("err %v, want a SessionError for %s", err, closer.addr)
	}
	if n := second.conns.Load(); n != 0 {
		t.Fatalf("second server tried %d times after the first accepted", n)
	}
}

func TestClientReplies(t *testing.T) {
	cases := []struct {
		name  string
		reply string
		want  proto.Status // 0: an error is expected
		text  string       // reply text, or a part of the error
	}{
		{"K", "12:Kok 1 qp 234,", proto.OK, "ok 1 qp 234"},
		{"Z", "9:Zlater...,", proto.Temporary, "later..."},
		{"D", "6:Dnope!,", proto.Permanent, "nope!"},
		{"empty", "0:,", 0, "empty reply"},
		{"unknown status", "3:Xok,", 0, "unknown status byte"},
		{"bad length", "K:ok,", 0, "malformed reply"},
		{"leading zero", "03:Kok,", 0, "malformed reply"},
		{"missing comma", "3:Kok;", 0, "missing ','"},
		{"cut short", "10:Kok", 0, "in the middle of the reply"},
		{"too long", "99999999:K", 0, "longer than"},
		{"nothing", "", 0, "without a reply"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := clientStartScripted(t, []byte(tc.reply))
			reply, err := clientSend(&qmqp.Client{Servers: []string{srv.addr}}, "m\n")
			if tc.want == 0 {
				var se *qmqp.SessionError
				if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.text) {
					t.Fatalf("err %v, want a SessionError containing %q", err, tc.text)
				}
				return
			}
			if reply.Status != tc.want || reply.Text != tc.text {
				t.Fatalf("reply %v, err %v", reply, err)
			}
			// Only K comes with a nil error; Z and D are a *proto.Error.
			var refused *proto.Error
			if (tc.want == proto.OK) != (err == nil) ||
				err != nil && (!errors.As(err, &refused) || refused.Reply != reply || refused.Temporary() != (tc.want == proto.Temporary)) {
				t.Fatalf("reply %v with err %v", reply, err)
			}
		})
	}
}

func TestClientTimeouts(t *testing.T) {
	// A server that reads the package and never answers: the read
	// timeout ends the session.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	start := time.Now()
	_, err = clientSend(&qmqp.Client{Servers: []string{l.Addr().String()}, Timeout: 300 * time.Millisecond}, "m\n")
	var se *qmqp.SessionError
	var ne net.Error
	if !errors.As(err, &se) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err %v, want a timed-out SessionError", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatal("the timeout did not end the session")
	}
}

// A message reader shorter than the declared size is an error after
// connect (the header promised more bytes).
func TestClientShortMessage(t *testing.T) {
	srv := clientStartScripted(t, netstring.AppendString(nil, "Kok"))
	_, err := (&qmqp.Client{Servers: []string{srv.addr}}).Send(context.Background(), clientEnv, strings.NewReader("abc"), 10)
	var se *qmqp.SessionError
	if !errors.As(err, &se) {
		t.Fatalf("err %v", err)
	}
}

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":       "10.0.0.1:628",
		"host:1628":      "host:1628",
		"mx.example.com": "mx.example.com:628",
		"[::1]":          "[::1]:628",
		"[::1]:1628":     "[::1]:1628",
		"::1":            "[::1]:628",
	} {
		if got := qmqp.WithDefaultPort(in, qmqp.DefaultPort); got != want {
			t.Errorf("WithDefaultPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"3:Kok,", "0:,", "2:Z.,", "1:D,", "3:Xok,", "K:ok,", "03:Kok,", "3:Kok", "", "99999999999:", "3:K\x00\xff,"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		reply, err := qmqp.ReadReply(bytes.NewReader(in))
		if err != nil {
			if reply != (proto.Reply{}) {
				t.Fatalf("error with a reply: %v %v", reply, err)
			}
			return
		}
		switch reply.Status {
		case proto.OK, proto.Temporary, proto.Permanent:
		default:
			t.Fatalf("status %q accepted", reply.Status)
		}
		if len(reply.Text) > proto.MaxReplyText {
			t.Fatalf("reply text of %d bytes over the limit", len(reply.Text))
		}
		// What was accepted is exactly a netstring at the input's start,
		// with CR, LF and NUL in its text shown as spaces.
		oneLine := make([]byte, len(in))
		for i, c := range in {
			if c == '\r' || c == '\n' || c == 0 {
				c = ' '
			}
			oneLine[i] = c
		}
		if enc := netstring.Append(nil, reply.Bytes()); !bytes.HasPrefix(oneLine, enc) {
			t.Fatalf("accepted %q from %q", enc, in)
		}
	})
}
