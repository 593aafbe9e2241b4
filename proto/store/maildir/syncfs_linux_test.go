package maildir

import (
	"errors"
	"strings"
	"testing"
)

// The group commit's sync is syncfs, then an fsync whose flush covers the
// inode tables a journal-less ext4 or ext2 writes after syncfs's own
// flush: the fsync runs only after syncfs returned, and either failure
// fails the sync, named.
func TestSyncThenFlushOrder(t *testing.T) {
	var calls []string
	syncfs := func(err error) func() error {
		return func() error { calls = append(calls, "syncfs"); return err }
	}
	fsync := func(err error) func() error {
		return func() error { calls = append(calls, "fsync"); return err }
	}
	if err := syncThenFlush(syncfs(nil), fsync(nil), "/m"); err != nil || strings.Join(calls, ",") != "syncfs,fsync" {
		t.Fatalf("calls %v, err %v; want syncfs then fsync, no error", calls, err)
	}
	calls = nil
	err := syncThenFlush(syncfs(errors.New("EIO")), fsync(nil), "/m")
	if err == nil || !strings.Contains(err.Error(), "syncfs /m") || strings.Join(calls, ",") != "syncfs" {
		t.Fatalf("failed syncfs: calls %v, err %v; want the syncfs error and no fsync", calls, err)
	}
	calls = nil
	err = syncThenFlush(syncfs(nil), fsync(errors.New("EIO")), "/m")
	if err == nil || !strings.Contains(err.Error(), "fsync /m") {
		t.Fatalf("failed fsync: err %v, want it named", err)
	}
}
