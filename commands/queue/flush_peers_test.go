//go:build peers

package queue

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

// TestQueueFlushSkipsHeld: qbox queue flush delivers the queue through
// Postfix but never a held message; once released, the next flush
// delivers it.
func TestQueueFlushSkipsHeld(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok := testpeer.Token(t)
	enqueue(t, sp, "go@example.test", "Subject: "+tok+"-go\n\ngo\n", "", time.Minute, "flush-go@example.test")
	enqueue(t, sp, "wait@example.test", "Subject: "+tok+"-wait\n\nwait\n", "", time.Minute, "flush-wait@example.test")
	ids := listIDs(t, dir)
	if code, out, stderr := qbox(t, dir, "hold", ids["wait@example.test"]); code != 0 {
		t.Fatalf("hold: exit %d: %s%s", code, out, stderr)
	}
	t.Setenv("QMQPSERVERS", pf.QMQPAddr)
	t.Setenv("QMAILHOME", t.TempDir())
	code, out, stderr := qbox(t, dir, "flush")
	if code != 0 || !oneDelivered(out, stderr) {
		t.Fatalf("flush: exit %d: %s%s", code, out, stderr)
	}
	pf.WaitFor(t, tok+"-go\n", 1, 30*time.Second)
	if left := listIDs(t, dir); len(left) != 1 || left["wait@example.test"] == "" {
		t.Fatalf("after the flush: %v, want the held message only", left)
	}
	if code, _, stderr := qbox(t, dir, "release", ids["wait@example.test"]); code != 0 {
		t.Fatalf("release: exit %d: %s", code, stderr)
	}
	if code, _, stderr := qbox(t, dir, "flush"); code != 0 {
		t.Fatalf("second flush: exit %d: %s", code, stderr)
	}
	if got := pf.WaitFor(t, tok+"-wait\n", 1, 30*time.Second); len(got) != 1 {
		t.Errorf("released message delivered %d times", len(got))
	}
	if got := pf.WaitFor(t, tok+"-go\n", 1, time.Second); len(got) != 1 {
		t.Errorf("first message delivered %d times", len(got))
	}
}

// `qbox queue flush ID` and sendmail's -qR / -qS deliver only the
// messages they name; the others stay queued, untouched.
func TestQueueFlushSelected(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok := testpeer.Token(t)
	enqueue(t, sp, "one@example.test", "Subject: "+tok+"-one\n\none\n", "", time.Minute, "sel-one@example.test")
	enqueue(t, sp, "two@example.test", "Subject: "+tok+"-two\n\ntwo\n", "", time.Minute, "sel-two@example.test")
	enqueue(t, sp, "three@example.test", "Subject: "+tok+"-three\n\nthree\n", "", time.Minute, "sel-three@example.test")
	ids := listIDs(t, dir)
	t.Setenv("QMQPSERVERS", pf.QMQPAddr)
	t.Setenv("QMAILHOME", t.TempDir())

	if code, out, stderr := qbox(t, dir, "flush", ids["one@example.test"]); code != 0 || !oneDelivered(out, stderr) {
		t.Fatalf("flush ID: exit %d: %s%s", code, out, stderr)
	}
	pf.WaitFor(t, tok+"-one\n", 1, 30*time.Second)
	if left := listIDs(t, dir); len(left) != 2 || left["one@example.test"] != "" {
		t.Fatalf("after flushing one ID: %v", left)
	}

	sendmail := testpeer.Personality(t, "sendmail")
	cmd := exec.Command(sendmail, "-q", "-v", "-qRSEL-TWO@") // case does not matter
	cmd.Env = append(os.Environ(), "QBOX_SPOOL="+dir)
	if out, err := cmd.CombinedOutput(); testpeer.ExitCode(t, err) != 0 || !strings.Contains(string(out), "1 delivered") {
		t.Fatalf("sendmail -qR: %v: %s", err, out)
	}
	pf.WaitFor(t, tok+"-two\n", 1, 30*time.Second)
	if left := listIDs(t, dir); len(left) != 1 || left["three@example.test"] == "" {
		t.Fatalf("after -qR: %v, want only three", left)
	}

	cmd = exec.Command(sendmail, "-q", "-qS!three@")
	cmd.Env = append(os.Environ(), "QBOX_SPOOL="+dir)
	if out, err := cmd.CombinedOutput(); testpeer.ExitCode(t, err) != 0 {
		t.Fatalf("sendmail -qS!: %v: %s", err, out)
	}
	if left := listIDs(t, dir); len(left) != 1 {
		t.Fatalf("-qS!three@ touched the message from three: %v", left)
	}
	if code, _, stderr := qbox(t, dir, "flush", "bad\nid"); code != 100 {
		t.Errorf("flush with a line break in the ID: exit %d: %s", code, stderr)
	}
}
