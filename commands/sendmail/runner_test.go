package sendmail

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"qbox/proto/testkit/maildirtest"
	"qbox/proto/testkit/testpeer"
)

// TestQueueRunnerSIGTERMMidFlush: SIGTERM while the runner's flush of a
// 400-message queue into qbox serve is under way finishes the message
// being sent, starts no other and ends the runner with exit 0; nothing is
// both stored and still queued, and a later sendmail -q stores each
// message once.
func TestQueueRunnerSIGTERMMidFlush(t *testing.T) {
	const n = 400
	env, dir, dest := spoolForServe(t, n)
	sendmail := testpeer.Personality(t, "sendmail")
	cmd := exec.Command(sendmail, "-bd", "-q1h")
	cmd.Env = env
	var stderr testpeer.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	guard := time.After(3 * time.Minute) // a guard, not a measure
	for {
		if entries, err := os.ReadDir(filepath.Join(dest, "new")); err == nil && len(entries) >= 50 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the runner ended before 50 messages were stored: %v\n%s", err, stderr.String())
		case <-guard:
			t.Fatal("50 messages were never stored")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if code := testpeer.ExitCode(t, err); code != 0 {
			t.Errorf("runner exit %d after SIGTERM, want 0\n%s", code, stderr.String())
		}
	case <-guard:
		t.Fatal("the runner did not end after SIGTERM")
	}
	stored, left := maildirtest.Recipients(t, dest), spoolRecipients(t, dir)
	if len(left) == 0 {
		t.Fatalf("nothing left queued (%d stored): the flush was not interrupted", len(stored))
	}
	for rcpt := range left {
		if stored[rcpt] > 0 {
			t.Errorf("%s is stored and still queued: it would be delivered twice", rcpt)
		}
	}
	again := exec.Command(sendmail, "-q")
	again.Env = env
	if out, err := again.CombinedOutput(); testpeer.ExitCode(t, err) != 0 {
		t.Fatalf("sendmail -q: %v\n%s", err, out)
	}
	stored = maildirtest.Recipients(t, dest)
	for i := 0; i < n; i++ {
		if rcpt := fmt.Sprintf("r%04d@example.test", i); stored[rcpt] != 1 {
			t.Errorf("%s stored %d times", rcpt, stored[rcpt])
		}
	}
}
