package qmqp_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/server"
)

// serverMemConn is a client stream held in memory: reads come from the
// fuzz input, writes are collected.
type serverMemConn struct {
	r   io.Reader
	out bytes.Buffer
}

func (c *serverMemConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *serverMemConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *serverMemConn) SetReadDeadline(time.Time) error  { return nil }
func (c *serverMemConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzServerServeConn feeds arbitrary bytes to the server as the client's
// stream: it never panics, writes at most one well-formed reply, ends
// every delivery it began exactly once, and answers K only for a package
// it stored exactly as sent.
func FuzzServerServeConn(f *testing.F) {
	f.Add(serverPkg("Subject: x\n\nbody\n", "a@b", "c@d"))
	f.Add(serverPkg("m\n", "", "c@d", "e@f", "c@d"))
	f.Add(serverPkg("m\n", "a@b"))
	f.Add(serverPkg("m\n", "a\x00b", "c@d"))
	f.Add([]byte("10000000000:"))
	f.Add([]byte("13:2:m\n;0:,3:c@d,,"))
	f.Add([]byte("0:,"))
	f.Add([]byte("012:"))
	f.Fuzz(func(t *testing.T, in []byte) {
		b := &serverBackend{}
		srv := &qmqp.Server{
			Backend: b,
			Limits:  server.Limits{MaxMessageSize: 64, MaxRecipients: 4, MaxAddress: 16},
			Timeout: time.Second,
		}
		conn := &serverMemConn{r: bytes.NewReader(in)}
		res, err := srv.ServeConn(context.Background(), conn, proto.Peer{RemoteIP: "127.0.0.1"})
		out := conn.out.Bytes()

		if len(out) == 0 {
			if res.Replied || err == nil {
				t.Fatalf("no reply, but Replied=%v err=%v", res.Replied, err)
			}
		} else {
			nr := netstring.NewReader(bytes.NewReader(out))
			body, perr := nr.ReadBytes(proto.MaxReplyText)
			if perr != nil {
				t.Fatalf("reply %q is not a netstring: %v", out, perr)
			}
			r, perr := proto.ParseReply(body)
			if perr != nil {
				t.Fatalf("reply %q: %v", out, perr)
			}
			if _, more := nr.Next(proto.MaxReplyText); more != io.EOF {
				t.Fatalf("more than one reply: %q", out)
			}
			if err != nil || !res.Replied || res.Reply != r {
				t.Fatalf("reply %q but result %+v, err %v", out, res, err)
			}
		}

		begun, aborted, committed := b.counts()
		if len(b.misuse) > 0 {
			t.Fatalf("delivery misuse: %v", b.misuse)
		}
		if aborted+committed != begun {
			t.Fatalf("Begin %d, Abort %d, Commit %d", begun, aborted, committed)
		}
		if committed > 1 {
			t.Fatalf("%d messages committed from one connection", committed)
		}
		if (committed == 1) != (res.Replied && res.Reply.Status == proto.OK) {
			t.Fatalf("committed %d, reply %v", committed, res.Reply)
		}
		if committed == 1 {
			// The stored message re-encodes to exactly what was read.
			m := b.committed[0]
			want := serverPkg(string(m.Body), m.Env.Sender, m.Env.Recipients...)
			if !bytes.HasPrefix(in, want) {
				t.Fatalf("stored %q from %q, which re-encodes differently", m.Body, in)
			}
			if m.Size != int64(len(m.Body)) || len(m.Env.Recipients) == 0 {
				t.Fatalf("stored message size %d, body %d, %d recipients", m.Size, len(m.Body), len(m.Env.Recipients))
			}
		}
	})
}
