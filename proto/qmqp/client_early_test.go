package qmqp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testkit/earlywalk"
)

// The offset walk (issue 20): a server replies after reading exactly n
// bytes of the package, for every n from 0 to its length. A K counts
// only after the final byte; before it, it is no K (ErrEarlyReply), read
// late by the client (earlywalk.Late: only the socket's count can tell)
// or at once (earlywalk.Live: no count, the reader's own view). An early
// Z or D, a server refusing, is honoured as a refusal; garbage is a
// failed session wherever it comes. Nothing is ever taken as delivered
// but a K after the final byte.
func TestClientEarlyReplyOffsetWalk(t *testing.T) {
	replies := []struct {
		name   string
		reply  []byte
		status proto.Status // 0: garbage, a failed session
	}{
		{"K", []byte("4:Kyes,"), proto.OK},
		{"Z", []byte("4:Ztmp,"), proto.Temporary},
		{"D", []byte("4:Dno!,"), proto.Permanent},
		{"garbage", []byte("hello\r\n"), 0},
	}
	cases := []struct {
		name string
		size int
		// rotate: every n gets a K in both modes and one of Z, D and
		// garbage in turn (n%3) with a late reader, to keep the 2 KB
		// walk to seconds under -race on two cores.
		rotate bool
	}{
		{"1-byte body", 1, false},
		{"2 KB body", 2048, true},
	}
	env := proto.Envelope{Sender: "s@x", Recipients: []string{"a@x", "b@x", "c@x"}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := earlywalk.Listen(t)
			msg := append(bytes.Repeat([]byte("m"), tc.size-1), '\n')
			total := netstring.Size(qmqp.PackageSize(env, int64(len(msg))))
			for n := int64(0); n <= total; n++ {
				for _, mode := range []earlywalk.Mode{earlywalk.Late, earlywalk.Live} {
					for k, r := range replies {
						if tc.rotate && k > 0 && (mode == earlywalk.Live || int64(k-1) != n%3) {
							continue
						}
						at := n
						if n == total {
							at = -1 // after the final byte: nothing to hold
						}
						g := &earlywalk.Gate{Mode: mode, At: at, ReplyEnd: int64(len(r.reply)), Total: total}
						srv.Next(func(c net.Conn) error { return earlywalk.Run(c, earlywalk.Step{Read: n, Write: r.reply}) })
						ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
						c := &qmqp.Client{Servers: []string{srv.Addr}, Dial: g.Dial()}
						reply, err := c.Send(ctx, env, bytes.NewReader(msg), int64(len(msg)))
						cancel()
						if serr := srv.Done(); serr != nil {
							t.Fatalf("%s, %s after %d of %d bytes: server: %v", mode, r.name, n, total, serr)
						}
						if gerr := g.Err(); gerr != nil {
							t.Fatalf("%s, %s after %d of %d bytes: %v", mode, r.name, n, total, gerr)
						}
						if cerr := checkEarly(n == total, r.status, reply, err); cerr != nil {
							t.Fatalf("%s, %s after %d of %d bytes: %v", mode, r.name, n, total, cerr)
						}
					}
				}
			}
		})
	}
}

func checkEarly(afterLast bool, status proto.Status, reply proto.Reply, err error) error {
	var se *qmqp.SessionError
	switch {
	case status == 0:
		if !errors.As(err, &se) || !errors.Is(err, proto.ErrBadReply) {
			return fmt.Errorf("reply %v, err %v: want a failed session (bad reply)", reply, err)
		}
	case status == proto.OK && afterLast:
		if err != nil || reply.Status != proto.OK {
			return fmt.Errorf("reply %v, err %v: want the K", reply, err)
		}
	case status == proto.OK:
		if !errors.As(err, &se) || !errors.Is(err, qmqp.ErrEarlyReply) || reply.Status == proto.OK {
			return fmt.Errorf("reply %v, err %v: want no K (ErrEarlyReply)", reply, err)
		}
	default: // a refusal, early or not
		var pe *proto.Error
		if reply.Status != status || !errors.As(err, &pe) {
			return fmt.Errorf("reply %v, err %v: want the server's %c as a refusal", reply, err, status)
		}
	}
	return nil
}
