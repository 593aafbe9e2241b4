package sendmail

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/queue/spool"
	"qbox/proto/testkit/maildirtest"
	"qbox/proto/testkit/testpeer"
)

// Ctrl-C during `sendmail -q` of a 400-message spool into `qbox serve`:
// the message under way gets its reply, no other is started, sendmail
// says how much is still queued and exits 75; nothing is both stored and
// still queued, and a second `sendmail -q` stores every message once.
func TestFlushSpoolInterruptedDeliversNothingTwice(t *testing.T) {
	const n = 400
	env, dir, dest := spoolForServe(t, n)

	sendmail := testpeer.Personality(t, "sendmail")
	cmd := exec.Command(sendmail, "-q")
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
	for {
		if entries, err := os.ReadDir(newDir); err == nil && len(entries) >= 50 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("sendmail -q ended before 50 messages were stored: %v\n%s", err, stderr.String())
		case <-guard:
			t.Fatal("50 messages were never stored")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("sendmail -q ended before the signal: %v", err)
	}
	var runErr error
	select {
	case runErr = <-exited:
	case <-guard:
		t.Fatal("the interrupted sendmail -q did not end")
	}
	if code := testpeer.ExitCode(t, runErr); code != 75 {
		t.Errorf("exit %d, want 75 (EX_TEMPFAIL)\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "still queued in "+dir) {
		t.Errorf("no summary:\n%s", stderr.String())
	}
	stored, left := maildirtest.Recipients(t, dest), spoolRecipients(t, dir)
	if len(left) == 0 {
		t.Fatalf("nothing left queued (%d stored): the run was not interrupted", len(stored))
	}
	for rcpt := range left {
		if stored[rcpt] > 0 {
			t.Errorf("%s is stored and still queued: it would be delivered twice", rcpt)
		}
	}

	again := exec.Command(sendmail, "-q")
	again.Env = env
	if out, err := again.CombinedOutput(); testpeer.ExitCode(t, err) != 0 {
		t.Fatalf("second sendmail -q: %v\n%s", err, out)
	}
	stored = maildirtest.Recipients(t, dest)
	for i := 0; i < n; i++ {
		if rcpt := fmt.Sprintf("r%04d@example.test", i); stored[rcpt] != 1 {
			t.Errorf("%s stored %d times", rcpt, stored[rcpt])
		}
	}
}

// spoolForServe starts a real qbox serve (QMQP into a fresh maildir,
// dest) and queues n one-recipient messages in a spool (dir) that env
// points sendmail at, as if the relay had been down.
func spoolForServe(t *testing.T, n int) (env []string, dir, dest string) {
	t.Helper()
	dest = filepath.Join(t.TempDir(), "dest")
	s := testpeer.StartServe(t, "--qmqp", "127.0.0.1:0", "--qmtp", "", "--maildir", dest)
	env, dir = mailEnv(t, s.QMQP)
	env = cleanEnv(env)
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("Subject: %d\n\nmessage %d\n", i, i)
		if _, err := sp.Enqueue(proto.Envelope{Sender: "me@example.test", Recipients: []string{fmt.Sprintf("r%04d@example.test", i)}}, strings.NewReader(msg), int64(len(msg)), "relay down"); err != nil {
			t.Fatal(err)
		}
	}
	return env, dir, dest
}
