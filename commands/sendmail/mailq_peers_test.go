//go:build peers

package sendmail

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

// A user's mailq (issue 22): with the hub down, nobody's sendmail drops
// its message into the system queue's maildrop; nobody's mailq then
// says where that mail waits and who can list it, instead of "Mail
// queue is empty" naming a spool under a home that does not exist.
func TestMailqOfAUser(t *testing.T) {
	top := publicDir(t, 0o755)
	q := makeSystemQueue(t, top+"/spool")
	env := cleanEnv([]string{"HOME=/nonexistent", "QBOX_SYSTEM_QUEUE=" + q.Root, "QMQPSERVERS=" + testpeer.ClosedAddr(t)})
	run := func(prog string, stdin string, args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(testpeer.Personality(t, prog), args...)
		testpeer.AsNobody(t, cmd)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return testpeer.ExitCode(t, cmd.Run()), stdout.String(), stderr.String()
	}
	if code, _, stderr := run("sendmail", "Subject: hi\n\nhello\n", "rcpt@example.test"); code != 0 {
		t.Fatalf("sendmail: exit %d, %s", code, stderr)
	}
	if left := dropsLeft(t, q); len(left) != 1 {
		t.Fatalf("maildrop holds %v, want the one drop", left)
	}
	code, out, stderr := run("mailq", "")
	if code != 0 || stderr != "" || strings.Contains(out, "/nonexistent") ||
		!strings.Contains(out, "0 message(s) of yours wait in "+q.DropDir()+" for root's pickup") || !strings.Contains(out, "sudo mailq") {
		t.Fatalf("mailq as nobody without a home: exit %d, stdout %q, stderr %q", code, out, stderr)
	}

	// With a home to note them in, mailq names the user's own drops,
	// and forgets each once root picked it up.
	home := publicDir(t, 0o755)
	if err := os.Chown(home, testpeer.Nobody, testpeer.Nobody); err != nil {
		t.Fatal(err)
	}
	env = append(env, "HOME="+home) // the last HOME counts
	if code, _, stderr := run("sendmail", "Subject: noted\n\nhello\n", "rcpt@example.test"); code != 0 {
		t.Fatalf("sendmail: exit %d, %s", code, stderr)
	}
	left := dropsLeft(t, q)
	if len(left) != 2 {
		t.Fatalf("maildrop holds %v, want two drops", left)
	}
	code, out, stderr = run("mailq", "")
	if code != 0 || stderr != "" || !strings.Contains(out, "1 message(s) of yours wait in "+q.DropDir()) {
		t.Fatalf("mailq as nobody with a home: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	named := 0
	for _, name := range left {
		if strings.Contains(out, name) {
			named++
		}
	}
	if named != 1 {
		t.Fatalf("mailq names %d of the drops %v, want the one noted:\n%s", named, left, out)
	}
	if _, err := spool.PickUp(q, time.Now()); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run("mailq", "")
	if code != 0 || !strings.Contains(out, "0 message(s) of yours wait in") {
		t.Fatalf("mailq after the pickup: exit %d, stdout %q", code, out)
	}
}
