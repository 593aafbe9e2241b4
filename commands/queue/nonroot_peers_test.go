//go:build peers

package queue

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

// qbox queue pickup run by a user (issue 22): one line saying it needs
// root, and qbox's permanent 100 (running it again as the same user
// cannot help), whether or not a system queue exists.
func TestPickupNeedsRoot(t *testing.T) {
	cmd := exec.Command(testpeer.Binary(t), "queue", "pickup")
	testpeer.AsNobody(t, cmd)
	cmd.Env = []string{"HOME=/nonexistent", "QBOX_SYSTEM_QUEUE=/nonexistent/qbox"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	code := testpeer.ExitCode(t, cmd.Run())
	if code != 100 || stdout.Len() != 0 || strings.Count(stderr.String(), "\n") != 1 ||
		!strings.HasPrefix(stderr.String(), "qbox queue pickup: needs root") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 100 and one line saying it needs root", code, stdout.String(), stderr.String())
	}
}
