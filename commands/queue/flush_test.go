package queue

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/queue/spool"
	"qbox/proto/testkit/maildirtest"
	"qbox/proto/testkit/testpeer"
)

// `qbox queue flush` into `qbox serve` (no peer needed; the Postfix
// versions are in flush_peers_test.go): a held message is never sent, the
// IDs given and sendmail's -qR select what is sent, and once released the
// held one goes too. serve answers K only after storing, so the maildir
// is complete when the flush exits.
func TestQueueFlushToServe(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "dest")
	srv := testpeer.StartServe(t, "--qmqp", "127.0.0.1:0", "--qmtp", "", "--maildir", dest)
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"one", "two", "three", "held"} {
		enqueue(t, sp, who+"@example.test", "Subject: "+who+"\n\n"+who+"\n", "", time.Minute, "sel-"+who+"@example.test")
	}
	ids := listIDs(t, dir)
	t.Setenv("QMQPSERVERS", srv.QMQP)
	t.Setenv("QMAILHOME", t.TempDir())
	stored := func(want ...string) {
		t.Helper()
		got := maildirtest.Recipients(t, dest)
		if len(got) != len(want) {
			t.Fatalf("stored %v, want %v", got, want)
		}
		for _, w := range want {
			if got["sel-"+w+"@example.test"] != 1 {
				t.Fatalf("stored %v, want %v once each", got, want)
			}
		}
	}

	if code, out, stderr := qbox(t, dir, "hold", ids["held@example.test"]); code != 0 {
		t.Fatalf("hold: exit %d: %s%s", code, out, stderr)
	}
	if code, out, stderr := qbox(t, dir, "flush", ids["one@example.test"]); code != 0 || !oneDelivered(out, stderr) {
		t.Fatalf("flush ID: exit %d: %s%s", code, out, stderr)
	}
	stored("one")

	sendmail := testpeer.Personality(t, "sendmail")
	cmd := exec.Command(sendmail, "-q", "-v", "-qRSEL-TWO@") // case does not matter
	cmd.Env = append(os.Environ(), "QBOX_SPOOL="+dir)
	if out, err := cmd.CombinedOutput(); testpeer.ExitCode(t, err) != 0 || !strings.Contains(string(out), "1 delivered") {
		t.Fatalf("sendmail -qR: %v: %s", err, out)
	}
	stored("one", "two")

	if code, out, stderr := qbox(t, dir, "flush"); code != 0 || !oneDelivered(out, stderr) {
		t.Fatalf("flush: exit %d: %s%s", code, out, stderr)
	}
	stored("one", "two", "three")
	if left := listIDs(t, dir); len(left) != 1 || left["held@example.test"] == "" {
		t.Fatalf("after the flush: %v, want the held message only", left)
	}

	if code, _, stderr := qbox(t, dir, "release", ids["held@example.test"]); code != 0 {
		t.Fatalf("release: exit %d: %s", code, stderr)
	}
	if code, out, stderr := qbox(t, dir, "flush"); code != 0 || !oneDelivered(out, stderr) {
		t.Fatalf("second flush: exit %d: %s%s", code, out, stderr)
	}
	stored("one", "two", "three", "held")
	if left := listIDs(t, dir); len(left) != 0 {
		t.Fatalf("queue after the last flush: %v", left)
	}
}

// oneDelivered: the flush printed flush-maildir's summary with one
// recipient delivered, and no log lines ("level=...") mixed in (issue 22:
// one uniform summary, which replaced sendmail -q -v's log lines and its
// "1 delivered" on stderr).
func oneDelivered(stdout, stderr string) bool {
	return strings.Contains(stdout, "succeeded ") && strings.Contains(stdout, "\nsummary: 1 succeeded, 0 deferred, 0 failed, 0 bounced;") &&
		!strings.Contains(stdout+stderr, "level=")
}
