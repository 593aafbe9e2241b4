package flush

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"qbox/proto"
	"qbox/proto/qmtp"
)

// A server that answers a package with two replies, the second while the
// next package (32 MiB, beyond the socket buffers) cannot have been
// received, breaks QMTP: the first message (sent in full, answered) is
// removed, the second stays, the run reports the violation and gives that
// server no second session.
func TestFlushLyingServerGetsNoSecondSession(t *testing.T) {
	src := newMaildir(t)
	enqueue(t, src, "1700000000.a.host", "s@example.test", "ppp-a@remote.test", []byte("Subject: small\n\nsmall\n"), 0)
	enqueue(t, src, "1700000001.b.host", "s@example.test", "ppp-b@remote.test", append([]byte("Subject: big\n\n"), bytes.Repeat([]byte("x\n"), 16<<20)...), 0)
	first := qmtp.WireSize(&proto.Message{Sender: "s@example.test", Recipients: []string{"a@remote.test"}, Size: int64(len("Subject: small\n\nsmall\n"))})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
	})
	var sessions atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			sessions.Add(1)
			go func() {
				defer c.Close()
				io.CopyN(io.Discard, c, first)
				c.Write([]byte("3:Kok,3:Kok,")) // and reads no more
				<-done
			}()
		}
	}()

	var out bytes.Buffer
	sum, err := Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Connect: hostConnect(ln.Addr().String(), &qmtp.Client{}), Out: &out})
	if !errors.Is(err, proto.ErrRemoteViolation) {
		t.Fatalf("err %v, want the protocol violation\n%s", err, out.String())
	}
	if n := sessions.Load(); n != 1 || sum.Sessions != 1 {
		t.Errorf("%d sessions (summary %d), want 1", n, sum.Sessions)
	}
	if _, err := os.Stat(filepath.Join(src, "new", "1700000000.a.host")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the message sent in full and answered K is still queued: %v", err)
	}
	if _, err := os.Stat(filepath.Join(src, "new", "1700000001.b.host")); err != nil {
		t.Errorf("the message not sent in full is gone: %v", err)
	}
	if sum.Succeeded != 1 || sum.Deferred != 1 || !strings.Contains(out.String(), "protocol violation") {
		t.Errorf("summary %+v, output:\n%s", sum, out.String())
	}
}
