// Package maildirtest reads what a maildir store wrote, for tests: it
// sits apart from testpeer so that the protocol packages' tests, which
// use testpeer, do not depend on proto/store.
package maildirtest

import (
	"errors"
	"os"
	"testing"

	"qbox/proto/store/maildir"
)

// Recipients counts the message files of a maildir by recipient
// (what `qbox serve` stored, one file per recipient): a missing maildir is
// empty, a malformed file fails the test.
func Recipients(t testing.TB, dir string) map[string]int {
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
