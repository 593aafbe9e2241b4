package qmtp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/testkit/earlywalk"
)

// The offset walk (issue 20): a server answers a package after reading
// exactly n of its bytes, for every n from 0 to its length. Only a reply
// after the final byte counts; any earlier one — K, Z, D or garbage — is
// a protocol violation, whoever reads it and whenever: the recipients of
// that package and every later one get a Z made up here, and only the
// packages before it, answered after their own final byte, keep their
// replies. Both ways of seeing the reply are walked (earlywalk.Late: the
// client's reader is late, only the socket's count can tell;
// earlywalk.Live: no count, the reader takes the reply while the writer
// is held).

var earlyReplies = []struct {
	name   string
	reply  []byte
	status proto.Status
	valid  bool
}{
	{"K", []byte("4:Kyes,"), proto.OK, true},
	{"Z", []byte("4:Ztmp,"), proto.Temporary, true},
	{"D", []byte("4:Dno!,"), proto.Permanent, true},
	{"garbage", []byte("hello\r\n"), 0, false},
}

var legitReply = []byte("3:Kok,")

func walkPackage(size int, rcpts ...string) proto.Message {
	msg := bytes.Repeat([]byte("m"), size-1)
	msg = append(msg, '\n')
	return bytesPackage("s@x", msg, rcpts...)
}

// walkSession sends pkgs through a gate holding the writer after n bytes
// of package target, the server answering target then with reply (once
// per recipient when it is valid); every other package is answered with
// legitReply after its final byte.
func walkSession(t *testing.T, srv *earlywalk.Server, mode earlywalk.Mode, pkgs []proto.Message, target int, n int64, reply []byte, valid bool) ([]proto.Result, error) {
	var base, total, replyStart int64
	var steps []earlywalk.Step
	for i := range pkgs {
		w := WireSize(&pkgs[i])
		if i < target {
			base += w
			replyStart += int64(len(legitReply) * len(pkgs[i].Recipients))
		}
		total += w
	}
	answer := func(i int, r []byte) []byte {
		if i == target && !valid {
			return r
		}
		return bytes.Repeat(r, len(pkgs[i].Recipients))
	}
	for i := range pkgs {
		w := WireSize(&pkgs[i])
		if i != target {
			steps = append(steps, earlywalk.Step{Read: w, Write: answer(i, legitReply)})
			continue
		}
		steps = append(steps, earlywalk.Step{Read: n, Write: answer(i, reply)})
		if n < w || !valid {
			break // the rest is read until the client closes
		}
	}
	early := answer(target, reply)
	at := base + n
	if n == WireSize(&pkgs[target]) {
		at = -1 // after the final byte: nothing to hold
	}
	g := &earlywalk.Gate{Mode: mode, At: at, Boundary: n == 0, ReplyStart: replyStart, ReplyEnd: replyStart + int64(len(early)), Total: total}
	srv.Next(func(c net.Conn) error { return earlywalk.Run(c, steps...) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var results []proto.Result
	_, err := (&Client{Dial: g.Dial()}).Deliver(ctx, []string{srv.Addr}, pkgs, collect(&results))
	if serr := srv.Done(); serr != nil {
		t.Fatalf("n=%d: server: %v", n, serr)
	}
	if gerr := g.Err(); gerr != nil {
		t.Fatalf("n=%d: %v", n, gerr)
	}
	return results, err
}

// checkWalk checks one session of the walk.
func checkWalk(pkgs []proto.Message, target int, counts bool, status proto.Status, results []proto.Result, err error) error {
	k := 0
	for i := range pkgs {
		for j := range pkgs[i].Recipients {
			if k >= len(results) {
				return fmt.Errorf("only %d results", len(results))
			}
			r := results[k]
			k++
			if r.Message != i || r.Recipient != j {
				return fmt.Errorf("result for %d/%d, want %d/%d", r.Message, r.Recipient, i, j)
			}
			switch {
			case i < target || (i > target && counts):
				if !r.FromServer || r.Reply.Status != proto.OK || r.Reply.Text != "ok" {
					return fmt.Errorf("package %d: %+v, want the server's K", i, r)
				}
			case i == target && counts:
				if !r.FromServer || r.Reply.Status != status {
					return fmt.Errorf("package %d: %+v, want the server's %c", i, r, status)
				}
			default:
				if r.FromServer || r.Reply.Status != proto.Temporary {
					return fmt.Errorf("package %d recipient %d: %+v, want a Z made up here (nothing counts)", i, j, r)
				}
			}
		}
	}
	if k != len(results) {
		return fmt.Errorf("%d results for %d recipients", len(results), k)
	}
	if counts && err != nil {
		return fmt.Errorf("err %v, want none", err)
	}
	if !counts && !errors.Is(err, proto.ErrRemoteViolation) {
		return fmt.Errorf("err %v, want a protocol violation", err)
	}
	return nil
}

func TestClientEarlyReplyOffsetWalk(t *testing.T) {
	cases := []struct {
		name   string
		pkgs   []proto.Message
		target int
		// rotate: every n gets a K in both modes, and one of Z, D and
		// garbage in turn (n%3) with a late reader, which keeps a 2 KB
		// walk to a few seconds under -race on two cores; the
		// violation is judged before the reply is parsed, so its kind
		// does not change the path the early check takes.
		rotate bool
	}{
		{"1-byte body", []proto.Message{walkPackage(1, "r@x")}, 0, false},
		{"1-byte body, 3 recipients", []proto.Message{walkPackage(1, "a@x", "b@x", "c@x")}, 0, false},
		{"2 KB body", []proto.Message{walkPackage(2048, "r@x")}, 0, true},
		{"pipelined, early at the 2nd", []proto.Message{walkPackage(1, "a@x"), walkPackage(40, "b@x", "c@x"), walkPackage(1, "d@x")}, 1, false},
		{"pipelined, early at the 3rd", []proto.Message{walkPackage(30, "a@x"), walkPackage(1, "b@x"), walkPackage(20, "c@x", "d@x")}, 2, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := earlywalk.Listen(t)
			length := WireSize(&tc.pkgs[tc.target])
			for n := int64(0); n <= length; n++ {
				for _, mode := range []earlywalk.Mode{earlywalk.Late, earlywalk.Live} {
					for k, er := range earlyReplies {
						if tc.rotate && k > 0 && (mode == earlywalk.Live || int64(k-1) != n%3) {
							continue
						}
						results, err := walkSession(t, srv, mode, tc.pkgs, tc.target, n, er.reply, er.valid)
						counts := n == length && er.valid
						if cerr := checkWalk(tc.pkgs, tc.target, counts, er.status, results, err); cerr != nil {
							t.Fatalf("%s, %s after %d of %d bytes: %v", mode, er.name, n, length, cerr)
						}
					}
				}
			}
		})
	}
}
