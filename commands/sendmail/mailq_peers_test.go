//go:build peers

package sendmail

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

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
		!strings.Contains(out, "waits in "+q.DropDir()+" for root's pickup") || !strings.Contains(out, "sudo mailq") {
		t.Fatalf("mailq as nobody: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
