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

// flushOutput runs the built flush-maildir with stdout and stderr apart,
// as cron would collect them.
func flushOutput(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testpeer.Binary(t), append([]string{"flush-maildir"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return testpeer.ExitCode(t, cmd.Run()), stdout.String(), stderr.String()
}

// Cron mails whatever a job prints: a flush with nothing to send prints
// nothing, and -q prints only what failed.
func TestFlushQuietForCron(t *testing.T) {
	rcpthosts := filepath.Join(t.TempDir(), "rcpthosts")
	if err := os.WriteFile(rcpthosts, []byte("remote.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Outside rcpthosts is D: a failure to report.
	addr, _ := serve(t, "--rcpthosts", rcpthosts)
	src := newMaildir(t)

	code, stdout, stderr := flushOutput(t, src, "ppp-", addr)
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("empty maildir: exit %d, stdout %q, stderr %q; want 0 and silence", code, stdout, stderr)
	}

	enqueue(t, src, "1.ok.host", "s@example.test", "ppp-r@remote.test", []byte("Subject: ok\n\nok\n"), time.Minute)
	code, stdout, stderr = flushOutput(t, "-q", src, "ppp-", addr)
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("-q, all delivered: exit %d, stdout %q, stderr %q; want 0 and silence", code, stdout, stderr)
	}

	enqueue(t, src, "2.ok.host", "s@example.test", "ppp-r2@remote.test", []byte("Subject: ok\n\nok\n"), time.Minute)
	enqueue(t, src, "3.no.host", "s@example.test", "ppp-r@elsewhere.test", []byte("Subject: no\n\nno\n"), time.Minute)
	code, stdout, _ = flushOutput(t, "-q", "--no-bounce", src, "ppp-", addr)
	if strings.Contains(stdout, "2.ok.host") || !strings.Contains(stdout, "3.no.host") || !strings.Contains(stdout, "summary:") {
		t.Fatalf("-q with a failure: exit %d, stdout %q; want only the failed message and the summary", code, stdout)
	}
}
