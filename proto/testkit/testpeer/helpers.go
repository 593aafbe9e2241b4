package testpeer

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"testing"

	"qbox/proto/store/maildir"
)

// LockedBuffer collects a running process's stdout or stderr; tests read
// it while the process still writes.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// MaildirRecipients counts the message files of a maildir by recipient
// (what `qbox serve` stored, one file per recipient): a missing maildir is
// empty, a malformed file fails the test.
func MaildirRecipients(t testing.TB, dir string) map[string]int {
	t.Helper()
	res, err := maildir.Scan(dir, maildir.ScanOptions{TmpMaxAge: -1})
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Malformed) > 0 {
		t.Fatalf("malformed files in %s: %v", dir, res.Malformed)
	}
	out := map[string]int{}
	for _, e := range res.Entries {
		out[e.Recipient]++
	}
	return out
}
