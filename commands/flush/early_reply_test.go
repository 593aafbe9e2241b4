package flush

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

// Issue 20 end to end: a QMTP server that says K the moment the client
// connects, before it has read a byte, then reads the package and closes
// without a reply, has not received the message. flush-maildir (and the
// maildirqmtp personality) keep the file and exit 111; nothing is
// reported as succeeded. The message is larger than the socket buffers
// (testpeer.EarlyKServer), so the K is on the client's side before the
// final byte goes out whatever the scheduling; the small-package case at
// every byte offset is proto/qmtp's TestClientEarlyReplyOffsetWalk.
func TestFlushEarlyKKeepsTheFile(t *testing.T) {
	body := append([]byte("Subject: early\n\n"), bytes.Repeat([]byte("x\n"), testpeer.EarlyKMessage/2)...)
	for _, c := range []struct {
		name  string
		early string
	}{
		{"one early K", "6:Kearly,"},
		{"three early Ks for one recipient", "6:Kearly,6:Kearly,6:Kearly,"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, sessions := testpeer.EarlyKServer(t, []byte(c.early))
			src := newMaildir(t)
			enqueue(t, src, "1700000000.a.host", "s@example.test", "ppp-a@remote.test", body, time.Minute)
			stdout, stderr, code := runQbox(t, nil, "flush-maildir", src, "ppp-", addr)
			if code != 111 {
				t.Errorf("exit %d, want 111\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if _, err := os.Stat(filepath.Join(src, "new", "1700000000.a.host")); err != nil {
				t.Fatalf("the message is gone after an early K: %v\n%s%s", err, stdout, stderr)
			}
			if strings.Contains(stdout, "Kearly") || !strings.Contains(stdout+stderr, "protocol violation") || strings.Contains(stdout, " 1 succeeded") {
				t.Errorf("output does not report the violation, or counts the K:\n%s%s", stdout, stderr)
			}
			if n := sessions.Load(); n != 1 {
				t.Errorf("%d sessions, want 1", n)
			}
		})
	}
	t.Run("maildirqmtp", func(t *testing.T) {
		addr, _ := testpeer.EarlyKServer(t, []byte("6:Kearly,"))
		src := newMaildir(t)
		enqueue(t, src, "1700000000.a.host", "s@example.test", "ppp-a@remote.test", body, time.Minute)
		cmd := exec.Command(testpeer.Personality(t, "maildirqmtp"), src, "ppp-", addr)
		out, err := cmd.CombinedOutput()
		if code := testpeer.ExitCode(t, err); code != 111 {
			t.Errorf("exit %d, want 111\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(src, "new", "1700000000.a.host")); err != nil {
			t.Fatalf("the message is gone after an early K: %v\n%s", err, out)
		}
	})
}
