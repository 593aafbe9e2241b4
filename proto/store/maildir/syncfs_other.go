//go:build !linux

package maildir

import (
	"os"
	"syscall"
)

// syncFS makes dir's new entries durable where syncfs(2) does not
// exist: sync(2), everything.
func syncFS(dir string) error {
	syscall.Sync()
	return nil
}

// SyncFS makes f's new entries durable where syncfs(2) does not exist:
// sync(2), everything, then f's own fsync.
func SyncFS(f *os.File) error {
	syscall.Sync()
	return f.Sync()
}

// fileSystemSync is nil where syncfs(2) does not exist: the group commit
// fsyncs each file.
func fileSystemSync(dir string) func() error { return nil }
