package inject

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto/testkit/testpeer"
)

// trickler is a QMQP server that reads the package, then sends a K reply
// one byte every 20 ms (10 s in all) until the test ends.
func trickler(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		l.Close()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := netstring.NewReader(c).ReadBytes(1 << 20); err != nil {
					return
				}
				reply := netstring.AppendString(nil, "K"+strings.Repeat("y", 499))
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
			}()
		}
	}()
	return l.Addr().String()
}

// `qbox inject --timeout 1s` gives up on a server that trickles its reply
// byte by byte: the timeout bounds the whole wait for the reply, so the
// message is not reported delivered (exit 111) while the server still has
// most of its reply to send.
func TestInjectTimeoutBoundsTricklingReply(t *testing.T) {
	addr := trickler(t)
	env, _ := baseEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a guard, not a measure
	defer cancel()
	cmd := exec.CommandContext(ctx, testpeer.Binary(t), "inject", "--timeout", "1s", "-s", addr, "rcpt@example.test")
	cmd.Env = env
	cmd.Stdin = strings.NewReader("Subject: slow\n\nhello\n")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the guard expired:\n%s", out)
	}
	if code := testpeer.ExitCode(t, err); code != 111 || !strings.Contains(string(out), "timeout") {
		t.Fatalf("exit %d, output %q; want 111 and a timeout", code, out)
	}
}
