package qmtp_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"testing/iotest"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmtp"
	"qbox/proto/server"
)

// FuzzServerServeConn feeds arbitrary bytes to the server as the client's
// stream (the first byte only chooses whether reads return one byte at a
// time): it never panics, every byte it writes belongs to a well-formed
// reply, it sends exactly one reply per recipient of every package it
// finished, and it ends every delivery it began exactly once.
func FuzzServerServeConn(f *testing.F) {
	for _, mode := range []byte{0, 1} {
		var s []byte
		s = append(s, mode)
		s = append(s, serverPkg(lf("Subject: x\n\nbody\n"), "a@b", "c@d", "c@d")...)
		s = append(s, serverPkg(cr("a\nb\r\n"), "", "e@f")...)
		f.Add(s)
		f.Add(append([]byte{mode}, serverPkg(lf("m\n"), "a@b")...))
		f.Add(append([]byte{mode}, serverPkg(lf("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz"), "a@b", "c@d")...))
		f.Add(append([]byte{mode}, serverPkg("\rtrailing\r", "a\x00", "c@d", "x")...))
		f.Add(append([]byte{mode}, serverPkg("Xm\n", "a@b", "c@d")...))
		f.Add(append([]byte{mode}, "3:\nm\n,0:,5:4:a@b,,"...))
		f.Add(append([]byte{mode}, "99999999999999999999:"...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		var r io.Reader = bytes.NewReader(in[1:])
		if in[0]&1 == 1 {
			r = iotest.OneByteReader(r)
		}
		b := &serverBackend{}
		srv := &qmtp.Server{
			Backend: b,
			Limits:  server.Limits{MaxMessageSize: 64, MaxRecipients: 3, MaxAddress: 16},
			Timeout: time.Second,
		}
		conn := &serverMemConn{r: r}
		res, _ := srv.ServeConn(context.Background(), conn, proto.Peer{RemoteIP: "127.0.0.1"})

		nr := netstring.NewReader(bytes.NewReader(conn.out.Bytes()))
		replies := 0
		var k int
		for {
			body, err := nr.ReadBytes(proto.MaxReplyText)
			if err == netstring.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				t.Fatalf("reply stream %q: %v", conn.out.Bytes(), err)
			}
			rep, err := proto.ParseReply(body)
			if err != nil {
				t.Fatalf("reply %q: %v", body, err)
			}
			if rep.Status == proto.OK {
				k++
			}
			replies++
		}
		if replies != res.Accepted+res.Deferred+res.Rejected || k != res.Accepted {
			t.Fatalf("%d replies (%d K) written, result %+v", replies, k, res)
		}
		b.mu.Lock()
		stored := 0
		for _, m := range b.committed {
			stored += len(m.Env.Recipients)
			if int64(len(m.Body)) > srv.Limits.MaxMessageSize || int64(len(m.Body)) > m.Size {
				t.Fatalf("stored %d bytes, limit %d, declared %d", len(m.Body), srv.Limits.MaxMessageSize, m.Size)
			}
		}
		b.mu.Unlock()
		if stored != k {
			t.Fatalf("%d recipients stored, %d K replies", stored, k)
		}
		b.check(t)
	})
}
