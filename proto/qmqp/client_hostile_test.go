package qmqp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
)

// hugeMessage is far beyond loopback's socket buffers (a few MiB): a
// client cannot finish writing it while the server does not read.
const hugeMessage = 32 << 20

type xReader struct{}

func (xReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func hugeBody() io.Reader { return io.LimitReader(xReader{}, hugeMessage) }

// hostileServer runs script on each connection to a listener on
// 127.0.0.1, then closes it.
func hostileServer(t *testing.T, script func(c net.Conn)) string {
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
				script(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// firstReadConn closes read when the client first reads a byte from the
// server.
type firstReadConn struct {
	net.Conn
	once sync.Once
	read chan struct{}
}

func (c *firstReadConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.once.Do(func() { close(c.read) })
	}
	return n, err
}

// A server that says K after reading the first bytes of a huge message
// has not received it. The server then waits until the client has read
// the K (it cannot have finished writing: the server was not reading),
// and only then reads the rest, so a client that takes the K is seen
// taking it. (Without the client's read, e.g. a client that reads only
// after writing everything, the server gives up waiting after 20 s and
// reads on, and such a client then takes the K for a success.)
func TestClientEarlyKIsNoK(t *testing.T) {
	clientRead := make(chan struct{})
	addr := hostileServer(t, func(c net.Conn) {
		io.CopyN(io.Discard, c, 100)
		c.Write(netstring.AppendString(nil, "Kqueued, honest"))
		select {
		case <-clientRead:
		case <-time.After(20 * time.Second):
		}
		io.Copy(io.Discard, c)
	})
	client := &qmqp.Client{
		Servers: []string{addr},
		Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, a)
			if err != nil {
				return nil, err
			}
			return &firstReadConn{Conn: c, read: clientRead}, nil
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reply, err := client.Send(ctx, clientEnv, hugeBody(), hugeMessage)
	if err == nil {
		t.Fatalf("reply %v taken for a success", reply)
	}
	var se *qmqp.SessionError
	if !errors.As(err, &se) || !errors.Is(err, qmqp.ErrEarlyReply) {
		t.Fatalf("err %v, want a session error for the early K", err)
	}
}

// An early refusal is honoured: the server says D (or Z) after the first
// bytes and reads on; the client reports that reply, as a *proto.Error
// (never a nil error: a refusal must not pass for success).
func TestClientEarlyRefusalHonoured(t *testing.T) {
	for _, refusal := range []string{"Dmessage too large", "Zdisk full"} {
		addr := hostileServer(t, func(c net.Conn) {
			io.CopyN(io.Discard, c, 100)
			c.Write(netstring.AppendString(nil, refusal))
			io.Copy(io.Discard, c)
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		reply, err := (&qmqp.Client{Servers: []string{addr}}).Send(ctx, clientEnv, hugeBody(), hugeMessage)
		cancel()
		var refused *proto.Error
		if !errors.As(err, &refused) || refused.Reply.String() != refusal || reply.String() != refusal {
			t.Errorf("reply %q, err %v; want %q as a *proto.Error", reply, err, refusal)
		}
	}
}

// The same when the refusing server stops reading: the client does not
// wait for a write timeout to report the D.
func TestClientEarlyRefusalFromServerThatStopsReading(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	addr := hostileServer(t, func(c net.Conn) {
		io.CopyN(io.Discard, c, 100)
		c.Write(netstring.AppendString(nil, "Dno"))
		<-done
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reply, err := (&qmqp.Client{Servers: []string{addr}, Timeout: 10 * time.Second}).Send(ctx, clientEnv, hugeBody(), hugeMessage)
	var refused *proto.Error
	if !errors.As(err, &refused) || refused.Temporary() || reply.Status != proto.Permanent {
		t.Fatalf("reply %q, err %v; want the D as a permanent *proto.Error", reply, err)
	}
}

// A server that trickles its reply one byte at a time does not restart
// the timeout: the client gives up within it although bytes keep coming
// (the whole reply would take 10 s).
func TestClientTricklingReplyTimesOut(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	addr := hostileServer(t, func(c net.Conn) {
		if _, err := netstring.NewReader(c).ReadBytes(1 << 20); err != nil {
			return
		}
		reply := netstring.AppendString(nil, "K"+string(bytes.Repeat([]byte("y"), 499)))
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for _, b := range reply {
			select {
			case <-tick.C:
			case <-stop:
				return
			}
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a guard, not a measure
	defer cancel()
	reply, err := (&qmqp.Client{Servers: []string{addr}, Timeout: time.Second}).Send(ctx, clientEnv, bytes.NewReader([]byte("hi\n")), 3)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("reply %q, err %v; want a timeout", reply, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the guard expired: the timeout did not bound the wait")
	}
}
