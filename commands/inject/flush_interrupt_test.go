package inject

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto/testkit/maildirtest"
	"qbox/proto/testkit/testpeer"
)

// Ctrl-C during `inject --flush` of a spool into `qbox serve`: the message
// under way gets its reply, no other is started, the run exits 111 with
// its summary, nothing is both stored and still queued, and a second run
// stores every message exactly once.
func TestFlushInterruptedDeliversNothingTwice(t *testing.T) {
	const n = 400
	dest := filepath.Join(t.TempDir(), "dest")
	addr := testpeer.StartServe(t, "--qmqp", "127.0.0.1:0", "--qmtp", "", "--maildir", dest).QMQP

	env, _ := baseEnv(t)
	dir := filepath.Join(t.TempDir(), "spool")
	env = append(env, "QBOX_SPOOL="+dir)
	for i := 0; i < n; i++ {
		enqueue(t, dir, []byte(fmt.Sprintf("Subject: %d\n\nmessage %d\n", i, i)), "me@example.test", fmt.Sprintf("r%04d@example.test", i))
	}

	cmd := exec.Command(testpeer.Binary(t), "inject", "--flush", "-s", addr)
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
	newDir := filepath.Join(dest, "new")
	var runErr error
	signalled := false
	for !signalled {
		if entries, err := os.ReadDir(newDir); err == nil && len(entries) >= 50 {
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatalf("the run ended before the signal: %v", err)
			}
			signalled = true
			break
		}
		select {
		case runErr = <-exited:
			t.Fatalf("the run ended before 50 messages were stored: %v\n%s", runErr, stderr.String())
		case <-guard:
			t.Fatal("50 messages were never stored")
		case <-time.After(5 * time.Millisecond):
		}
	}
	select {
	case runErr = <-exited:
	case <-guard:
		t.Fatal("the interrupted run did not end")
	}
	if code := testpeer.ExitCode(t, runErr); code != 111 {
		t.Errorf("exit %d, want 111\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "still queued in "+dir+" (interrupted)") {
		t.Errorf("no summary saying interrupted:\n%s", stderr.String())
	}
	stored := maildirtest.Recipients(t, dest)
	left := spoolRecipients(t, dir)
	if len(left) == 0 {
		t.Fatalf("the interrupted run left nothing queued (%d stored): it was not interrupted", len(stored))
	}
	for rcpt := range left {
		if stored[rcpt] > 0 {
			t.Errorf("%s is stored and still queued: it would be delivered twice", rcpt)
		}
	}

	code, out := inject(t, env, nil, "--flush", "-s", addr)
	if code != 0 {
		t.Fatalf("second run: exit %d\n%s", code, out)
	}
	stored = maildirtest.Recipients(t, dest)
	for i := 0; i < n; i++ {
		rcpt := fmt.Sprintf("r%04d@example.test", i)
		if stored[rcpt] != 1 {
			t.Errorf("%s stored %d times", rcpt, stored[rcpt])
		}
	}
}
