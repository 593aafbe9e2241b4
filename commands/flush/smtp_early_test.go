package flush

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

// Issue 20 over SMTP: a server whose replies all came before the message
// did (here: with the EHLO reply) delivers nothing: flush-maildir --smtp
// keeps the file, says why, and exits 111.
func TestFlushSMTPEarlyRepliesKeepFile(t *testing.T) {
	src := newMaildir(t)
	enqueue(t, src, "1700000000.a.host", "s@example.test", "ppp-a@remote.test", []byte("Subject: x\n\nx\n"), 0)
	addr := testpeer.EarlySMTPServer(t, 1)
	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--smtp", addr, "--helo", testHelo, src, "ppp-")
	if code != 111 {
		t.Fatalf("exit %d, want 111\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(src, "new", "1700000000.a.host")); err != nil {
		t.Fatalf("the message answered before it was sent is gone: %v", err)
	}
	if !strings.Contains(stdout+stderr, "protocol violation") || !strings.Contains(stdout, "deferred new/1700000000.a.host") {
		t.Errorf("output does not name the violation, or claims success:\n%s\n%s", stdout, stderr)
	}
}
